using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Herald.Processes.Servers;

/// <summary>
/// What the private servers of the fault tests share: free loopback ports, finding a server's programs, a temporary
/// folder (owned by the server's user when running as root), and running its command-line tools.
/// </summary>
/// <remarks>
/// The fault tests stop and start their server in the middle of a load, so they never use the shared servers of
/// scripts/services.sh (other test assemblies run against those at the same time): each starts a server of its own on a
/// free port of 127.0.0.1, in a temporary folder deleted at the end. A missing program fails the test, naming the
/// package to install (scripts/services.sh up installs them all).
/// </remarks>
public static class LocalServer
{
    /// <summary>True when this process runs as root (PostgreSQL refuses to run as root: its programs then run as postgres).</summary>
    public static bool IsRoot => Environment.IsPrivilegedProcess;

    /// <summary>A TCP port of 127.0.0.1 free right now.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>
    /// The path of <paramref name="program"/>: in the first of <paramref name="folders"/> that has it (null entries are
    /// skipped), else on PATH; throws naming <paramref name="package"/> when it is nowhere.
    /// </summary>
    public static string FindProgram(string program, string package, params string?[] folders)
    {
        ArgumentNullException.ThrowIfNull(folders);
        var path = Environment.GetEnvironmentVariable("PATH")?.Split(Path.PathSeparator) ?? [];
        foreach (var folder in folders.Concat(path))
        {
            if (string.IsNullOrEmpty(folder))
            {
                continue;
            }

            var candidate = Path.Combine(folder, program);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException(
            $"The fault tests start a private server and need '{program}' (package {package}), which is neither in " +
            $"{string.Join(", ", folders.Where(f => f is not null))} nor on PATH. Install it (scripts/services.sh up does).");
    }

    /// <summary>A new empty folder under the temporary folder, owned by <paramref name="owner"/> when running as root.</summary>
    public static async Task<string> CreateFolderAsync(string name, string? owner = null)
    {
        var folder = Directory.CreateTempSubdirectory(name + "-").FullName;
        if (owner is not null && IsRoot)
        {
            await RunAsync("chown", [owner, folder], TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }

        return folder;
    }

    /// <summary>Deletes a folder made by <see cref="CreateFolderAsync"/>, ignoring what cannot be deleted.</summary>
    public static void DeleteFolder(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Runs a tool to its end (as <paramref name="user"/> through runuser when given and running as root); throws with its output when it fails.</summary>
    public static async Task<string> RunAsync(string file, IEnumerable<string> arguments, TimeSpan timeout, string? user = null, params (string Name, string Value)[] environment)
    {
        var list = arguments.ToList();
        if (user is not null && IsRoot)
        {
            list.InsertRange(0, ["-u", user, "--", file]);
            file = "runuser";
        }

        var (code, output, error) = await ExternalProcess.RunAsync(file, list, timeout, environment).ConfigureAwait(false);
        if (code != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', list)} exited with {code}: {error.Trim()} {output.Trim()}");
        }

        return output;
    }

    /// <summary>Waits until <paramref name="ready"/> holds, polling every 100 ms; throws with <paramref name="what"/> at the deadline.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> ready, string what, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(ready);
        var clock = Stopwatch.StartNew();
        while (!await ready().ConfigureAwait(false))
        {
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"{what} was not ready within {timeout}.");
            }

            await Task.Delay(100).ConfigureAwait(false);
        }
    }

    /// <summary>True when something accepts TCP connections on 127.0.0.1:<paramref name="port"/>.</summary>
    public static async Task<bool> AcceptsAsync(int port)
    {
        using var client = new TcpClient();
        try
        {
            await client.ConnectAsync(IPAddress.Loopback, port).ConfigureAwait(false);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
