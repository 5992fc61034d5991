using System.Diagnostics;
using System.Globalization;

namespace Herald.Processes;

/// <summary>
/// A running Herald.CrashChild, seen from the test that started it: the ids it printed (see the child's Program.cs) and a
/// SIGKILL. A test project that runs the child builds it through a ProjectReference that does not reference its assembly.
/// </summary>
public sealed class CrashChildProcess : IDisposable
{
    private static readonly TimeSpan ReadyDeadline = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan ExitDeadline = TimeSpan.FromSeconds(20);

    private readonly Process _process;
    private readonly Task<string> _errors;

    private CrashChildProcess(Process process)
    {
        _process = process;
        _errors = process.StandardError.ReadToEndAsync();
    }

    /// <summary>The outbox ids it committed, in the order added.</summary>
    public List<Guid> Committed { get; private set; } = [];

    /// <summary>The outbox ids it added to a unit of work that never commits.</summary>
    public List<Guid> Uncommitted { get; private set; } = [];

    /// <summary>The id its relay was sending when it became ready (postgres only): a send that never finishes.</summary>
    public Guid? Sending { get; private set; }

    /// <summary>The ids its relay sent, in order, as far as read (outbox-relay modes: each one the queue accepted).</summary>
    public List<Guid> Sent { get; } = [];

    /// <summary>
    /// The id of the send after which the child killed itself (outbox-relay modes with a kill point): in the queue, and
    /// not marked sent in the outbox.
    /// </summary>
    public Guid? KilledAfterSending { get; private set; }

    /// <summary>Every line it printed up to "ready".</summary>
    public List<string> Lines { get; } = [];

    /// <summary>Starts the child with <c>dotnet</c> on its built dll and reads its output until it says "ready".</summary>
    public static async Task<CrashChildProcess> StartAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } dotnet ? dotnet : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(ChildPath());
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        var child = new CrashChildProcess(Process.Start(start) ?? throw new InvalidOperationException("The crash child did not start."));
        try
        {
            await child.ReadUntilReadyAsync();
            return child;
        }
        catch
        {
            child.Dispose();
            throw;
        }
    }

    /// <summary>Kills the child with SIGKILL, as a crash would, and waits until it is gone; returns its exit code.</summary>
    public async Task<int> KillAsync()
    {
        _process.Kill();
        using var deadline = new CancellationTokenSource(ExitDeadline);
        await _process.WaitForExitAsync(deadline.Token);
        return _process.ExitCode;
    }

    /// <summary>
    /// Reads the relay's progress until it has sent <paramref name="count"/> messages (true), or its output ends first
    /// (false: it killed itself or died).
    /// </summary>
    public async Task<bool> ReadSentAsync(int count)
    {
        using var deadline = new CancellationTokenSource(ReadyDeadline);
        while (Sent.Count < count)
        {
            if (await _process.StandardOutput.ReadLineAsync(deadline.Token) is not { } line)
            {
                return false;
            }

            Read(line);
        }

        return true;
    }

    /// <summary>
    /// The next line it prints after "ready" (the stream modes keep printing); throws <see cref="TimeoutException"/> after
    /// <paramref name="timeout"/>, and <see cref="InvalidOperationException"/> with its error output when it ended.
    /// </summary>
    public async Task<string> ReadLineAsync(TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            return await _process.StandardOutput.ReadLineAsync(deadline.Token) ?? throw await EndedAsync(deadline.Token);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            throw new TimeoutException($"The crash child printed nothing within {timeout}.");
        }
    }

    /// <summary>What it printed that was not read yet, once it has exited (after <see cref="KillAsync"/>).</summary>
    public async Task<List<string>> ReadRestAsync()
    {
        var rest = await _process.StandardOutput.ReadToEndAsync();
        return [.. rest.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
    }

    /// <summary>Reads the rest of its output and waits until it ended by itself (it killed itself); returns its exit code.</summary>
    public async Task<int> WaitForExitAsync()
    {
        using var deadline = new CancellationTokenSource(ReadyDeadline);
        while (await _process.StandardOutput.ReadLineAsync(deadline.Token) is { } line)
        {
            Read(line);
        }

        await _process.WaitForExitAsync(deadline.Token);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
    }

    private static List<Guid> Ids(string line) => [.. line[(line.IndexOf(' ', StringComparison.Ordinal) + 1)..].Split(',').Select(Guid.Parse)];

    // The child is built by the ProjectReference (not referenced as an assembly) into its own output folder, which sits in
    // the same place relative to the test project's, for whichever configuration runs.
    private static string ChildPath()
    {
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = output.Name;
        var configuration = output.Parent!.Name;
        var tests = output.Parent.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(tests, "Herald.CrashChild", "bin", configuration, framework, "Herald.CrashChild.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException("Build Herald.CrashChild first (the test project's build does).", path);
    }

    private async Task<InvalidOperationException> EndedAsync(CancellationToken cancellationToken)
    {
        await _process.WaitForExitAsync(cancellationToken);
        return new InvalidOperationException(
            $"The crash child ended early (exit {_process.ExitCode.ToString(CultureInfo.InvariantCulture)}): {await _errors}");
    }

    private async Task ReadUntilReadyAsync()
    {
        using var deadline = new CancellationTokenSource(ReadyDeadline);
        while (true)
        {
            var line = await _process.StandardOutput.ReadLineAsync(deadline.Token) ?? throw await EndedAsync(deadline.Token);
            Lines.Add(line);
            if (Read(line))
            {
                return;
            }
        }
    }

    // Returns whether the line is "ready".
    private bool Read(string line)
    {
        switch (line.Split(' ', 2)[0])
        {
            case "committed":
                Committed = Ids(line);
                break;
            case "uncommitted":
                Uncommitted = Ids(line);
                break;
            case "sending":
                Sending = Ids(line).Single();
                break;
            case "sent":
                Sent.Add(Ids(line).Single());
                break;
            case "killing":
                KilledAfterSending = Ids(line).Single();
                break;
            case "ready":
                return true;
        }

        return false;
    }
}
