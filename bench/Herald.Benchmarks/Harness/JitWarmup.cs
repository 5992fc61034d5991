using System.Diagnostics;
using System.Globalization;
using System.Runtime;

namespace Herald.Benchmarks.Harness;

/// <summary>
/// Warm-up until the JIT has settled: passes of every contender's work, repeated until passes over at least
/// <see cref="MinimumPass"/> compile at most <see cref="QuietMethods"/> methods. One short pass is not enough: tiered
/// compilation promotes a method only after 30 calls, and only once no method has run for the first time for 100 ms; with
/// dynamic PGO it goes through an instrumented tier first, so the first measured rounds used to run part of the code
/// unoptimised while the JIT's background thread took CPU from whichever contender was being measured (in one NATS run the
/// rounds rose from about 35,000 to 55,000 msg/s before they levelled off; a setup method called once per pass reaches its
/// 30 calls only at the 30th pass). The contenders share the process, so the pass
/// warms all of them alike.
/// </summary>
internal static class JitWarmup
{
    /// <summary>Passes over at least <see cref="MinimumPass"/> that compiled at most this many methods end the warm-up.</summary>
    public const int QuietMethods = 10;

    /// <summary>Quicker passes are counted together with the next ones, so what is judged outlasts the tiering delay.</summary>
    public static readonly TimeSpan MinimumPass = TimeSpan.FromSeconds(1);

    /// <summary>The warm-up stops after this many passes, or <see cref="MaxTime"/>, even if the JIT has not settled (the results file says so).</summary>
    public const int MaxPasses = 100;

    /// <summary>See <see cref="MaxPasses"/>.</summary>
    public static readonly TimeSpan MaxTime = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Runs <paramref name="pass"/> (given the pass number, from 1) until the JIT settles, or once when
    /// <paramref name="quick"/>. Returns what happened, for the results file.
    /// </summary>
    public static async Task<WarmupReport> RunAsync(Func<int, Task> pass, bool quick)
    {
        var total = Stopwatch.StartNew();
        var compiledAtStart = JitInfo.GetCompiledMethodCount();
        var passes = 0;
        var windowStart = Stopwatch.GetTimestamp();
        var windowCompiled = JitInfo.GetCompiledMethodCount();
        while (true)
        {
            passes++;
            await pass(passes).ConfigureAwait(false);
            if (quick)
            {
                return new WarmupReport(passes, JitInfo.GetCompiledMethodCount() - compiledAtStart, total.Elapsed, Settled: false, Quick: true);
            }

            var spent = passes >= MaxPasses || total.Elapsed >= MaxTime;
            if (Stopwatch.GetElapsedTime(windowStart) < MinimumPass && !spent)
            {
                continue;
            }

            var compiled = JitInfo.GetCompiledMethodCount() - windowCompiled;
            if (compiled <= QuietMethods || spent)
            {
                return new WarmupReport(passes, JitInfo.GetCompiledMethodCount() - compiledAtStart, total.Elapsed, compiled <= QuietMethods, Quick: false);
            }

            windowStart = Stopwatch.GetTimestamp();
            windowCompiled = JitInfo.GetCompiledMethodCount();
        }
    }
}

/// <summary>What a warm-up did: its passes, the methods the JIT compiled meanwhile, and whether it settled.</summary>
internal readonly record struct WarmupReport(int Passes, long MethodsCompiled, TimeSpan Elapsed, bool Settled, bool Quick)
{
    /// <summary>One sentence for the results file.</summary>
    public string Describe() => Quick
        ? "Warm-up: one pass (quick run; the JIT may not have settled)."
        : string.Create(
            CultureInfo.InvariantCulture,
            $"Warm-up: {Passes} pass(es) of every contender over {Elapsed.TotalSeconds:0.0} s, {MethodsCompiled:N0} methods compiled, ") +
          (Settled
              ? string.Create(CultureInfo.InvariantCulture, $"until {JitWarmup.MinimumPass.TotalSeconds:0.#} s of passes compiled at most {JitWarmup.QuietMethods} methods (the JIT had settled).")
              : string.Create(CultureInfo.InvariantCulture, $"stopped (at most {JitWarmup.MaxPasses} passes or {JitWarmup.MaxTime.TotalSeconds:0} s) before the JIT settled: the first rounds may still include compilation."));
}
