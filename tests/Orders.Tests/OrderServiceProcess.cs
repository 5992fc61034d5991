using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Orders.Tests;

/// <summary>
/// The order service as a child process (<c>dotnet Orders.dll</c>, the sample's own build output) on a free 127.0.0.1
/// port, for tests that kill it with SIGKILL as a crash would.
/// </summary>
internal sealed class OrderServiceProcess : IAsyncDisposable
{
    private static readonly TimeSpan ReadyDeadline = TimeSpan.FromSeconds(90);

    private readonly Process _process;
    private readonly Task _drain;

    private OrderServiceProcess(Process process, Uri address)
    {
        _process = process;
        Address = address;
        // The child logs to its console; read it so it never blocks on a full pipe, and keep the tail for a failure.
        _drain = Task.WhenAll(DrainAsync(process.StandardOutput), DrainAsync(process.StandardError));
    }

    public Uri Address { get; }

    public Queue<string> Tail { get; } = new();

    /// <summary>Starts the service with <paramref name="arguments"/> (its profile settings) and waits until /health answers 200.</summary>
    public static async Task<OrderServiceProcess> StartAsync(IReadOnlyList<string> arguments)
    {
        var port = FreePort();
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } dotnet ? dotnet : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(ServicePath());
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        start.ArgumentList.Add("--urls");
        start.ArgumentList.Add($"http://127.0.0.1:{port}");
        var service = new OrderServiceProcess(Process.Start(start) ?? throw new InvalidOperationException("The order service did not start."), new Uri($"http://127.0.0.1:{port}"));
        try
        {
            await service.WaitUntilHealthyAsync();
            return service;
        }
        catch
        {
            await service.DisposeAsync();
            throw;
        }
    }

    /// <summary>SIGKILL, as a crash: no shutdown code runs. Waits until the process is gone.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
        {
            // The service is the one process (`dotnet Orders.dll` hosts the app itself). Killing "the entire tree" walks
            // every process of the machine first, so the kill landed up to ~100 ms late, after requests in flight had
            // been answered: a plain SIGKILL lands inside them.
            _process.Kill();
        }

        await _process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        await _drain;
        _process.Dispose();
    }

    private async Task WaitUntilHealthyAsync()
    {
        using var http = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(10) };
        using var deadline = new CancellationTokenSource(ReadyDeadline);
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"The order service exited with {_process.ExitCode} before it was ready:\n{string.Join('\n', Tail)}");
            }

            try
            {
                using var response = await http.GetAsync("/health", deadline.Token);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (TaskCanceledException) when (!deadline.IsCancellationRequested)
            {
                // One slow answer on a loaded machine; ask again.
            }

            if (deadline.IsCancellationRequested)
            {
                throw new TimeoutException($"The order service was not healthy within {ReadyDeadline}:\n{string.Join('\n', Tail)}");
            }

            await Task.Delay(50, deadline.Token);
        }
    }

    private async Task DrainAsync(StreamReader reader)
    {
        while (await reader.ReadLineAsync() is { } line)
        {
            lock (Tail)
            {
                Tail.Enqueue(line);
                if (Tail.Count > 40)
                {
                    Tail.Dequeue();
                }
            }
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    // The sample's own output, next to this test project's in the tree: samples/Orders/bin/<configuration>/<framework>.
    private static string ServicePath()
    {
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = output.Name;
        var configuration = output.Parent!.Name;
        var root = output.Parent.Parent!.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(root, "samples", "Orders", "bin", configuration, framework, "Orders.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException("Build samples/Orders first (this test project's build does).", path);
    }
}
