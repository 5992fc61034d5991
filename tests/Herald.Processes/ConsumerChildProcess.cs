using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Herald.Processes;

/// <summary>
/// A running Herald.Transport.ConsumerChild, seen from the test that started it: what it wrote on stdout (see the child's
/// Program.cs), its stderr for failure messages, a clean stop through stdin and a SIGKILL.
/// </summary>
public sealed class ConsumerChildProcess : IAsyncDisposable
{
    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ExitDeadline = TimeSpan.FromSeconds(20);

    private readonly Process _process;
    private readonly Lock _lock = new();
    private readonly List<Guid> _completed = [];
    private readonly HashSet<Guid> _distinct = [];
    private readonly HashSet<Guid> _acked = [];
    private readonly List<Guid> _holding = [];
    private readonly HashSet<Guid> _gated = [];
    private readonly StringBuilder _errors = new();
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _stdout;
    private readonly Task _stderr;
    private bool _disposed;

    private ConsumerChildProcess(string name, Process process)
    {
        Name = name;
        _process = process;
        _stdout = Task.Run(ReadOutputAsync);
        _stderr = Task.Run(ReadErrorsAsync);
    }

    /// <summary>A name for failure messages, such as "a" or "killed".</summary>
    public string Name { get; }

    /// <summary>Every completion in the order written, repeats included.</summary>
    public IReadOnlyList<Guid> Completed
    {
        get
        {
            lock (_lock)
            {
                return [.. _completed];
            }
        }
    }

    /// <summary>The ids whose ack returned.</summary>
    public IReadOnlySet<Guid> Acked
    {
        get
        {
            lock (_lock)
            {
                return _acked.ToHashSet();
            }
        }
    }

    /// <summary>The ids completed but held unacked (with --hold-after).</summary>
    public IReadOnlyList<Guid> Holding
    {
        get
        {
            lock (_lock)
            {
                return [.. _holding];
            }
        }
    }

    /// <summary>How many messages wait in its handlers for the gate to open (with --gate).</summary>
    public int GatedCount
    {
        get
        {
            lock (_lock)
            {
                return _gated.Count;
            }
        }
    }

    /// <summary>Starts the child with <c>dotnet</c> on its built dll and waits until it says it is consuming.</summary>
    public static async Task<ConsumerChildProcess> StartAsync(string name, string kind, string connection, string queue, params string[] options)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } dotnet ? dotnet : "dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(ChildPath());
        start.ArgumentList.Add(kind);
        start.ArgumentList.Add(connection);
        start.ArgumentList.Add(queue);
        foreach (var option in options)
        {
            start.ArgumentList.Add(option);
        }

        var process = Process.Start(start) ?? throw new InvalidOperationException("The consumer child did not start.");
        var child = new ConsumerChildProcess(name, process);
        try
        {
            await child._ready.Task.WaitAsync(StartDeadline);
            return child;
        }
        catch (Exception e)
        {
            await child.EndAsync();
            var description = child.Describe();
            await child.DisposeAsync();
            throw new InvalidOperationException($"Consumer child {name} did not get ready. {description}", e);
        }
    }

    /// <summary>Adds this process's completed ids to <paramref name="union"/>.</summary>
    public void AddCompletedTo(HashSet<Guid> union)
    {
        lock (_lock)
        {
            union.UnionWith(_distinct);
        }
    }

    /// <summary>Lets its handlers (started with --gate) go on.</summary>
    public async Task OpenGateAsync()
    {
        await _process.StandardInput.WriteLineAsync("go");
        await _process.StandardInput.FlushAsync();
    }

    /// <summary>Asks the child to stop (a "stop" line, then stdin closed) and waits for it to exit 0 with all its output read.</summary>
    public async Task StopAsync()
    {
        if (!_process.HasExited)
        {
            try
            {
                await _process.StandardInput.WriteLineAsync("stop");
                _process.StandardInput.Close();
            }
            catch (IOException)
            {
                // It exited meanwhile: its exit code tells how.
            }
        }

        await WaitForExitAsync();
        if (_process.ExitCode != 0)
        {
            throw new InvalidOperationException($"Consumer child {Name} exited with {_process.ExitCode} when asked to stop. {Describe()}");
        }
    }

    /// <summary>Kills the child with SIGKILL, as a crash would, and waits until it is gone and all it wrote is read.</summary>
    public async Task KillAsync()
    {
        _process.Kill();
        await WaitForExitAsync();
    }

    /// <summary>Counts, exit code and stderr, for failure messages.</summary>
    public string Describe()
    {
        lock (_lock)
        {
            var exit = _process.HasExited ? _process.ExitCode.ToString(CultureInfo.InvariantCulture) : "running";
            var errors = _errors.Length > 4000 ? "..." + _errors.ToString(_errors.Length - 4000, 4000) : _errors.ToString();
            return $"[{Name}: {_completed.Count} completions ({_distinct.Count} distinct), {_acked.Count} acked, {_holding.Count} holding, {_gated.Count} gated, exit {exit}; stderr: {(errors.Length == 0 ? "(empty)" : errors)}]";
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_disposed)
        {
            _disposed = true;
            await EndAsync();
            _process.Dispose();
        }
    }

    // Kills the child unless it has exited already: a test that got here without stopping it has failed.
    private async Task EndAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        try
        {
            await WaitForExitAsync();
        }
        catch (TimeoutException)
        {
            // Nothing more to do for a child that does not die; the test has failed already.
        }
    }

    private async Task WaitForExitAsync()
    {
        using var deadline = new CancellationTokenSource(ExitDeadline);
        try
        {
            await _process.WaitForExitAsync(deadline.Token);
            await Task.WhenAll(_stdout, _stderr).WaitAsync(deadline.Token);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }

            throw new TimeoutException($"Consumer child {Name} did not exit within {ExitDeadline}. {Describe()}");
        }
    }

    private async Task ReadOutputAsync()
    {
        while (await _process.StandardOutput.ReadLineAsync() is { } line)
        {
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            var verb = space < 0 ? line : line[..space];
            var id = Guid.Empty;
            if (!(space >= 0 && Guid.TryParse(line.AsSpan(space + 1), out id)) && verb is "complete" or "acked" or "holding" or "gated")
            {
                verb = "unexpected";
            }

            lock (_lock)
            {
                switch (verb)
                {
                    case "ready":
                        _ready.TrySetResult();
                        break;
                    case "complete":
                        _completed.Add(id);
                        _distinct.Add(id);
                        break;
                    case "acked":
                        _acked.Add(id);
                        break;
                    case "holding":
                        _holding.Add(id);
                        break;
                    case "gated":
                        _gated.Add(id);
                        break;
                    case "stopped":
                        break;
                    default:
                        _errors.Append("(unexpected stdout line: ").Append(line).AppendLine(")");
                        break;
                }
            }
        }

        _ready.TrySetException(new InvalidOperationException($"Consumer child {Name} closed its output before it was ready."));
    }

    private async Task ReadErrorsAsync()
    {
        while (await _process.StandardError.ReadLineAsync() is { } line)
        {
            lock (_lock)
            {
                _errors.AppendLine(line);
            }
        }
    }

    // The child is built by the test project's ProjectReference (not referenced as an assembly) into its own output folder,
    // which sits in the same place relative to the test project's, for whichever configuration runs.
    private static string ChildPath()
    {
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = output.Name;
        var configuration = output.Parent!.Name;
        var tests = output.Parent.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(tests, "Herald.Transport.ConsumerChild", "bin", configuration, framework, "Herald.Transport.ConsumerChild.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException("Build Herald.Transport.ConsumerChild first (the test project's build does).", path);
    }
}
