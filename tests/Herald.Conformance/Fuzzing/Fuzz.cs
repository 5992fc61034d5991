using CsCheck;

namespace Herald.Conformance.Fuzzing;

/// <summary>
/// Runs generated cases from fixed seeds (issue 10): case <c>i</c> of a run is always generated from the same CsCheck seed,
/// so a run is the same on every machine. A failing case is replayed through CsCheck, whose exception prints its seed and
/// input; setting <c>HERALD_FUZZ_SEED</c> (or CsCheck's <c>CsCheck_Seed</c>) to that seed runs that one case alone.
/// </summary>
public static class Fuzz
{
    /// <summary>Cases per decode path and for the pipeline: the issue asks for at least 10,000.</summary>
    public const int Cases = 10_000;

    /// <summary>True when a full run, not the replay of one seed: distribution checks (each class reached) apply only then.</summary>
    public static bool IsFullRun => ReplaySeed is null;

    private const uint Stream = 10;
    private const ulong FirstSeed = 20_261_204;

    /// <summary>The seed of one case to replay, from HERALD_FUZZ_SEED or CsCheck_Seed; null to run every case.</summary>
    public static string? ReplaySeed =>
        Environment.GetEnvironmentVariable("HERALD_FUZZ_SEED") is { Length: > 0 } seed ? seed
        : Environment.GetEnvironmentVariable("CsCheck_Seed") is { Length: > 0 } csCheckSeed ? csCheckSeed
        : null;

    /// <summary>The CsCheck seed of case <paramref name="index"/>.</summary>
    public static string SeedOf(int index) => new PCG(Stream, FirstSeed + (ulong)index).ToString();

    /// <summary>
    /// Runs <paramref name="assert"/> on <paramref name="cases"/> generated inputs; the first failure throws with its seed.
    /// Returns how many cases ran: 1 when replaying a seed, so a test checks its totals against what ran. <paramref name="print"/>
    /// shows a failing input (CsCheck's printer by default).
    /// </summary>
    public static int Run<T>(Gen<T> gen, Action<T> assert, Action<string> writeLine, int cases = Cases, Func<T, string>? print = null)
    {
        ArgumentNullException.ThrowIfNull(gen);
        ArgumentNullException.ThrowIfNull(assert);
        ArgumentNullException.ThrowIfNull(writeLine);
        if (ReplaySeed is { } replay)
        {
            gen.Sample(assert, writeLine, seed: replay, iter: 1, threads: 1, print: print);
            return 1;
        }

        for (var i = 0; i < cases; i++)
        {
            var seed = SeedOf(i);
            var value = gen.Generate(PCG.Parse(seed), null!, out _);
            try
            {
                assert(value);
            }
#pragma warning disable CA1031 // Any failure of a case is reported with its seed.
            catch (Exception e)
#pragma warning restore CA1031
            {
                throw Failed(i, seed, e, () => gen.Sample(assert, writeLine, seed: seed, iter: 1, threads: 1, print: print), writeLine);
            }
        }

        writeLine($"{cases} cases passed (seeds {SeedOf(0)} .. {SeedOf(cases - 1)})");
        return cases;
    }

    /// <summary>The asynchronous <see cref="Run{T}"/>.</summary>
    public static async Task<int> RunAsync<T>(Gen<T> gen, Func<T, Task> assert, Action<string> writeLine, int cases = Cases, Func<T, string>? print = null)
    {
        ArgumentNullException.ThrowIfNull(gen);
        ArgumentNullException.ThrowIfNull(assert);
        ArgumentNullException.ThrowIfNull(writeLine);
        if (ReplaySeed is { } replay)
        {
            await gen.SampleAsync(assert, writeLine, seed: replay, iter: 1, threads: 1, print: print).ConfigureAwait(false);
            return 1;
        }

        for (var i = 0; i < cases; i++)
        {
            var seed = SeedOf(i);
            var value = gen.Generate(PCG.Parse(seed), null!, out _);
            Exception? failure = null;
            try
            {
                await assert(value).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Any failure of a case is reported with its seed.
            catch (Exception e)
#pragma warning restore CA1031
            {
                failure = e;
            }

            if (failure is not null)
            {
                Exception? replayed = null;
                try
                {
                    await gen.SampleAsync(assert, writeLine, seed: seed, iter: 1, threads: 1, print: print).ConfigureAwait(false);
                }
#pragma warning disable CA1031 // CsCheck's own report (seed and input) is what the test shows.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    replayed = e;
                }

                throw Report(i, seed, failure, replayed, writeLine);
            }
        }

        writeLine($"{cases} cases passed (seeds {SeedOf(0)} .. {SeedOf(cases - 1)})");
        return cases;
    }

    /// <summary>
    /// <paramref name="count"/> inputs generated from the fixed seeds, for an end-to-end batch written to a real engine.
    /// Element <c>i</c> replays alone with <see cref="SeedOf"/>(i).
    /// </summary>
    public static IReadOnlyList<T> Batch<T>(Gen<T> gen, int count)
    {
        ArgumentNullException.ThrowIfNull(gen);
        var batch = new T[count];
        for (var i = 0; i < count; i++)
        {
            batch[i] = gen.Generate(PCG.Parse(SeedOf(i)), null!, out _);
        }

        return batch;
    }

    private static Exception Failed(int index, string seed, Exception failure, Action replay, Action<string> writeLine)
    {
        Exception? replayed = null;
        try
        {
            replay();
        }
#pragma warning disable CA1031 // CsCheck's own report (seed and input) is what the test shows.
        catch (Exception e)
#pragma warning restore CA1031
        {
            replayed = e;
        }

        return Report(index, seed, failure, replayed, writeLine);
    }

    private static FuzzCaseException Report(int index, string seed, Exception failure, Exception? replayed, Action<string> writeLine)
    {
        var message = $"Fuzz case {index} failed; replay it alone with HERALD_FUZZ_SEED={seed}. " +
            (replayed is null ? "Its replay passed (the failure depends on state the earlier cases left)." : replayed.Message);
        writeLine(message);
        return new FuzzCaseException(message, failure);
    }
}

/// <summary>A generated case failed; the message names its seed.</summary>
public sealed class FuzzCaseException(string message, Exception inner) : Exception(message, inner);
