using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Projections;

/// <summary>Projections on the in-memory stores: configuration errors, lag and stall reports, and what cannot be rebuilt.</summary>
public sealed class ProjectionTests
{
    [Theory]
    [InlineData(0, 500, "BatchSize")]
    [InlineData(500, 0, "CommitEvery")]
    public void BadProjectionOptions_AreRejectedAtStart_NamingTheSetting(int batchSize, int commitEvery, string setting)
    {
        var services = new ServiceCollection();
        services.AddHerald(h => h.AddProjection(new Gated()).ConfigureProjections(o =>
        {
            o.BatchSize = batchSize;
            o.CommitEvery = commitEvery;
        }));
        using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<Microsoft.Extensions.Options.IOptions<ProjectionOptions>>().Value);

        Assert.Contains("ProjectionOptions." + setting, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AProjectionWithoutHandlers_OrWithATakenName_IsRefusedAtConfiguration()
    {
        var services = new ServiceCollection();
        services.AddHerald(h =>
        {
            var empty = Assert.Throws<ArgumentException>(() => h.AddProjection(new Empty()));
            Assert.Contains("handles no event type", empty.Message, StringComparison.Ordinal);
            h.AddProjection(new Gated());
            var twice = Assert.Throws<ArgumentException>(() => h.AddProjection(new Gated()));
            Assert.Contains("registered already", twice.Message, StringComparison.Ordinal);
        });
        Assert.Throws<ArgumentException>(() => new BadName());
        Assert.Throws<ArgumentException>(() => new ReadModelTable<Doc>("Not-Valid"));
    }

    [Fact]
    public async Task WritingATableTheProjectionDidNotDeclare_DeadLettersTheEventWithTheReason()
    {
        using var host = await StartAsync(new Undeclared());
        var position = await AppendAsync(host, "undeclared");
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync("undeclared")).IsRunningHere, "the projection runs");
        await manager.WaitForPositionAsync("undeclared", position).WaitAsync(Eventually.DefaultTimeout);

        var deadLetter = Assert.Single(await host.Services.GetRequiredService<Herald.Reliability.DeadLetters.IDeadLetterStore>().ListAsync(new() { Endpoint = "undeclared" }));
        Assert.Contains("without declaring it", deadLetter.ErrorMessage, StringComparison.Ordinal);
        await host.StopAsync();
    }

    [Fact]
    public async Task AProjectionThatDoesNotMove_IsReportedStalled_WithItsLag_ThenRecovers()
    {
        var gated = new Gated();
        using var host = await StartAsync(gated);
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync("gated")).IsRunningHere, "the projection runs");
        await AppendAsync(host, "g1");
        var last = await AppendAsync(host, "g2");

        var stalled = await Eventually.ValueAsync(
            async () => await manager.GetStatusAsync("gated") is { IsStalled: true } status ? status : null,
            "the blocked projection is reported stalled");
        Assert.True(stalled.Lag >= 1, $"lag {stalled.Lag}");
        Assert.Equal(last, stalled.HeadPosition);

        gated.Open.TrySetResult();
        await manager.WaitForPositionAsync("gated", last).WaitAsync(Eventually.DefaultTimeout);
        var caughtUp = await manager.GetStatusAsync("gated");
        Assert.False(caughtUp.IsStalled);
        Assert.Equal(0, caughtUp.Lag);
        await host.StopAsync();
    }

    [Fact]
    public async Task AnInlineProjection_CannotBeRebuilt_AndReportsNoLag()
    {
        using var host = await StartAsync(new Gated(), ProjectionMode.Inline);
        var manager = host.Services.GetRequiredService<ProjectionManager>();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => manager.RebuildAsync("gated"));
        Assert.Contains("inline", error.Message, StringComparison.Ordinal);
        var status = await manager.GetStatusAsync("gated");
        Assert.Equal(ProjectionMode.Inline, status.Mode);
        Assert.Null(status.Position);
        await Assert.ThrowsAsync<KeyNotFoundException>(async () => await manager.GetStatusAsync("missing"));
        await host.StopAsync();
    }

    private static async Task<long> AppendAsync(IHost host, string stream)
    {
        var envelope = host.Services.GetRequiredService<EnvelopeFactory>().Create(new Happened(stream));
        return (await host.Services.GetRequiredService<IEventStore>().AppendAsync(stream, ExpectedVersion.Any, [envelope])).LastPosition;
    }

    private static async Task<IHost> StartAsync(Projection projection, ProjectionMode mode = ProjectionMode.Async)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .AddProjection(projection, mode)
            .ConfigureRetries(r => r.NoRetries())
            .Configure(o => o.StartConsumer = false)
            .ConfigureProjections(o =>
            {
                o.StallAfter = TimeSpan.FromMilliseconds(200);
                o.StatusInterval = TimeSpan.FromMilliseconds(50);
                o.RetryInterval = TimeSpan.FromMilliseconds(50);
            }));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [MessageType("projection-tests-happened")]
    public sealed record Happened(string Name);

    public sealed record Doc(string Name);

    private sealed class Empty() : Projection("empty");

    private sealed class BadName() : Projection("bad name!");

    private sealed class Undeclared : Projection
    {
        private static readonly ReadModelTable<Doc> Docs = new("undeclared_docs");

        public Undeclared()
            : base("undeclared") => On<Happened>((e, context, _) => context.UpsertAsync(Docs, e.Name, new Doc(e.Name)));
    }

    /// <summary>Waits on a gate before applying anything, so a test can hold it behind the head.</summary>
    private sealed class Gated : Projection
    {
        private static readonly ReadModelTable<Doc> Docs = new("gated_docs");

        public Gated()
            : base("gated")
        {
            Table(Docs);
            On<Happened>(async (e, context, token) =>
            {
                await Open.Task.WaitAsync(token);
                await context.UpsertAsync(Docs, e.Name, new Doc(e.Name));
            });
        }

        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
