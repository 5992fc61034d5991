using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.Reliability.DeadLetters;

namespace Herald.Tests.Reliability;

/// <summary>The background trim of <see cref="DeadLetterOptions.MaxAge"/> and <see cref="DeadLetterOptions.MaxCount"/> (issue 10).</summary>
public sealed class DeadLetterRetentionTests
{
    [Fact]
    public async Task TheMonitor_TrimsTheEndpointsDeadLetters_ToTheMaxAgeAndTheMaxCount_InTheBackground_Issue10()
    {
        await using var host = await ReliabilityHost.StartAsync(h => h.ConfigureDeadLetters(o =>
        {
            o.MaxAge = TimeSpan.FromDays(7);
            o.MaxCount = 3;
            o.MonitorInterval = TimeSpan.FromMinutes(1);
        }));
        var now = host.Clock.GetUtcNow();
        var store = host.DeadLetters;
        var old = Enumerable.Range(0, 2).Select(i => DeadLetterAt(host.Endpoint, now.AddDays(-8).AddMinutes(i))).ToList();
        var recent = Enumerable.Range(0, 5).Select(i => DeadLetterAt(host.Endpoint, now.AddHours(-1).AddMinutes(i))).ToList();
        foreach (var deadLetter in old.Concat(recent))
        {
            await store.AddAsync(deadLetter);
        }

        await host.RunUntilAsync(
            () => store.CountAsync(new DeadLetterQuery { Endpoint = host.Endpoint }).AsTask().Result == 3,
            "the dead letters are trimmed to the retention",
            TimeSpan.FromMinutes(1));

        var kept = await store.ListAsync(new DeadLetterQuery { Endpoint = host.Endpoint });
        Assert.Equal(recent.Skip(2).Select(d => d.Id), kept.Select(d => d.Id));
        await Eventually.UntilAsync(() => host.Logs.Entries.Any(e => e.EventId == 1500), "the trim is logged");
    }

    [Fact]
    public async Task NegativeRetention_IsRefusedAtStart()
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => ReliabilityHost.StartAsync(h => h.ConfigureDeadLetters(o =>
        {
            o.MaxAge = TimeSpan.FromSeconds(-1);
            o.MaxCount = -2;
        })));

        Assert.Contains("MaxAge", error.Message, StringComparison.Ordinal);
        Assert.Contains("MaxCount", error.Message, StringComparison.Ordinal);
    }

    private static DeadLetter DeadLetterAt(string endpoint, DateTimeOffset failedAt) => new()
    {
        Id = Guid.CreateVersion7(failedAt),
        Envelope = TestEnvelopes.Create(),
        Endpoint = endpoint,
        Cause = DeadLetterCause.RetriesExhausted,
        ErrorType = "System.InvalidOperationException",
        ErrorMessage = "failed",
        Fingerprint = "fp",
        FirstFailureTime = failedAt,
        LastFailureTime = failedAt,
        AttemptCount = 1,
    };
}
