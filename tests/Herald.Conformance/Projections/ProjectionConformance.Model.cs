using System.Collections.Immutable;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;
using Xunit.Sdk;

namespace Herald.Conformance.Projections;

/// <summary>
/// A seeded randomized test of an async projection against a plain fold of the same events: random appends in batches,
/// catch-ups (every document equals the fold, no deleted one remains), blue/green rebuilds while appends go on (reads
/// sampled meanwhile each equal the fold at some position, never a mix, and never go back), host restarts (one in the
/// middle of a rebuild), on random batch sizes and <see cref="ProjectionOptions.CommitEvery"/>.
/// </summary>
public abstract partial class ProjectionConformance
{
    private static readonly string[] AccountIds = ["a-0", "a-1", "a-2", "a-3", "a-\u00e9", "b-4"];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(10)]
    public async Task AnAsyncProjection_ThroughAppendsRebuildsAndRestarts_AlwaysShowsTheFoldOfAPrefixOfTheLog(int seed)
    {
        // The seed alone makes the log and the plan; when reads are sampled and appends land during a rebuild is up to timing.
        var random = new Random(seed);
        var reads = new Random(-seed);
        var batchSize = random.GetItems([1, 4, 16, 64], 1)[0];
        int? commitEvery = random.GetItems<int?>([null, 1, 5], 1)[0];
        var model = new BankModel(seed, $"batch size {batchSize}, commit every {commitEvery?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "default"}");
        var store = NewStore();
        var host = await StartAccountsAsync(store, batchSize, commitEvery);
        try
        {
            var generation = 1;
            var rounds = 7;
            var restartAt = random.Next(2, rounds - 1);
            var rebuildsAt = new HashSet<int> { random.Next(1, rounds), random.Next(1, rounds) };
            var interruptAt = random.Next(4) == 0 ? random.Next(1, rounds) : -1;
            for (var round = 0; round < rounds; round++)
            {
                await AppendRandomAsync(host, model, random, random.Next(1, 4));
                if (round == interruptAt)
                {
                    // A rebuild cut short by the host's stop leaves the live generation serving; the next one still runs.
                    var manager = host.Services.GetRequiredService<ProjectionManager>();
                    await Running(manager, Accounts.ProjectionName);
                    var interrupted = manager.RebuildAsync(Accounts.ProjectionName);
                    await AppendRandomAsync(host, model, random, 1);
                    host = await RestartAsync(host, store, batchSize, commitEvery);
                    Assert.IsNotType<TimeoutException>(await Record.ExceptionAsync(() => interrupted.WaitAsync(TimeSpan.FromSeconds(30))));
                    await CatchUpAsync(host, model, "after a host restart that interrupted a rebuild");
                    var serving = (await host.Services.GetRequiredService<ProjectionManager>().GetStatusAsync(Accounts.ProjectionName)).Generation;
                    Assert.True(serving >= generation, model.Describe($"after an interrupted rebuild, generation {serving} serves (was {generation})"));
                    generation = serving;
                }

                if (round == restartAt)
                {
                    // Stopped while possibly behind: the next runner starts at the committed checkpoint.
                    host = await RestartAsync(host, store, batchSize, commitEvery);
                }

                if (rebuildsAt.Contains(round))
                {
                    generation = await RebuildWhileAppendingAsync(host, model, random, reads, generation);
                }
                else if (random.Next(2) == 0)
                {
                    await CatchUpAsync(host, model, $"after round {round}");
                }
            }

            await CatchUpAsync(host, model, "at the end");
            await host.StopAsync();
        }
        finally
        {
            host.Dispose();
        }
    }

    private async Task<IHost> RestartAsync(IHost host, string store, int batchSize, int? commitEvery)
    {
        await host.StopAsync();
        host.Dispose();
        return await StartAccountsAsync(store, batchSize, commitEvery);
    }

    // The appends hold events the projection does not handle, too.
    private Task<IHost> StartAccountsAsync(string store, int batchSize, int? commitEvery) =>
        StartAsync(store, new Accounts(), batchSize: batchSize, commitEvery: commitEvery, configure: h => h.AddMessageType<AccountNoted>());

    // Starts a rebuild, and until it completes appends (8 single appends in all, the rest after it) and samples reads; then
    // the rebuilt generation must be the fold of every event. Returns the generation that serves now.
    private static async Task<int> RebuildWhileAppendingAsync(IHost host, BankModel model, Random random, Random reads, int generation)
    {
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        var readModels = host.Services.GetRequiredService<ReadModels>();
        await Running(manager, Accounts.ProjectionName);
        var reader = new PrefixReader(model);
        var rebuild = manager.RebuildAsync(Accounts.ProjectionName);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        var appends = 8;
        while (!rebuild.IsCompleted)
        {
            Assert.True(DateTime.UtcNow < deadline, model.Describe("the rebuild did not complete within 60 s"));
            // Bounded, so that the rebuild, which chases the head, gets there.
            if (appends > 0 && reads.Next(3) == 0)
            {
                appends--;
                await AppendRandomAsync(host, model, random, 1);
            }

            await reader.SampleAsync(readModels, reads);
        }

        await rebuild;
        await reader.SampleAsync(readModels, reads);
        if (appends > 0)
        {
            await AppendRandomAsync(host, model, random, appends);
        }

        var status = await manager.GetStatusAsync(Accounts.ProjectionName);
        Assert.True(status.Generation > generation, model.Describe($"the rebuild completed, yet generation {status.Generation} serves (was {generation})"));
        await CatchUpAsync(host, model, $"after the rebuild into generation {status.Generation}");
        return status.Generation;
    }

    // Appends 1 to 6 random events to each of `appends` random account streams (one append each).
    private static async Task AppendRandomAsync(IHost host, BankModel model, Random random, int appends)
    {
        var events = host.Services.GetRequiredService<IEventStore>();
        var factory = host.Services.GetRequiredService<EnvelopeFactory>();
        for (var i = 0; i < appends; i++)
        {
            var account = random.GetItems(AccountIds, 1)[0];
            var batch = RandomAccountEvents(random, account);

            var appended = await events.AppendAsync("account-" + account, ExpectedVersion.Any, [.. batch.Select(e => factory.Create(e))]);
            model.Appended(batch, appended.LastPosition);
        }
    }

    // 1 to 6 random events of one account, some of a type the projection does not handle.
    private static object[] RandomAccountEvents(Random random, string account)
    {
        var batch = new object[random.Next(1, 7)];
        for (var e = 0; e < batch.Length; e++)
        {
            batch[e] = random.Next(20) switch
            {
                < 8 => new AccountDeposited(account, random.Next(1, 100)),
                < 12 => new AccountWithdrawn(account, random.Next(1, 100)),
                < 15 => new AccountRenamed(account, "name-" + random.Next(1000).ToString(System.Globalization.CultureInfo.InvariantCulture)),
                < 18 => new AccountClosed(account),
                _ => new AccountNoted(account),
            };
        }

        return batch;
    }

    // Waits until the projection applied every event appended, then reads every document: each must equal the fold's.
    private static async Task CatchUpAsync(IHost host, BankModel model, string when)
    {
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Running(manager, Accounts.ProjectionName);
        await manager.WaitForPositionAsync(Accounts.ProjectionName, model.LastPosition).WaitAsync(Eventually.DefaultTimeout);
        var readModels = host.Services.GetRequiredService<ReadModels>();
        var expected = model.States[^1];
        var accounts = (await readModels.QueryAsync(Accounts.Table, new ReadModelQuery())).Items;
        if (BankModel.FirstDifference(expected.Accounts.Values.ToList(), accounts) is { } difference)
        {
            throw new XunitException(model.Describe($"{when}, the accounts differ from the fold of all {model.States.Count - 1} events: {difference}"));
        }

        foreach (var id in AccountIds)
        {
            var read = await readModels.GetAsync(Accounts.Table, id);
            Assert.True(Equals(expected.Accounts.GetValueOrDefault(id), read), model.Describe($"{when}, account '{id}' reads {read?.ToString() ?? "(none)"}, the fold has {expected.Accounts.GetValueOrDefault(id)?.ToString() ?? "(none)"}"));
        }

        var summary = await readModels.GetAsync(Accounts.Summaries, Accounts.SummaryId);
        Assert.True(Equals(expected.Summary, summary), model.Describe($"{when}, the summary reads {summary?.ToString() ?? "(none)"}, the fold has {expected.Summary?.ToString() ?? "(none)"}"));
    }

    /// <summary>The fold of the events appended so far: the state after each prefix of the log (index = events applied).</summary>
    private sealed class BankModel(int seed, string settings)
    {
        private readonly List<string> _log = [];

        public List<BankState> States { get; } = [new(ImmutableSortedDictionary.Create<string, AccountDocument>(StringComparer.Ordinal), null)];

        public long LastPosition { get; private set; }

        public void Appended(IEnumerable<object> events, long lastPosition)
        {
            foreach (var e in events)
            {
                States.Add(Apply(States[^1], e));
                _log.Add(e.ToString()!);
            }

            LastPosition = lastPosition;
        }

        public string Describe(string failure) =>
            $"Seed {seed} ({settings}): {failure}. Events: {string.Join("; ", _log.Select((e, i) => $"{i + 1}: {e}"))}";

        // The first place two lists of accounts differ, or null.
        public static string? FirstDifference(IReadOnlyList<AccountDocument> expected, IReadOnlyList<AccountDocument> read)
        {
            for (var i = 0; i < Math.Max(expected.Count, read.Count); i++)
            {
                var want = i < expected.Count ? expected[i] : null;
                var got = i < read.Count ? read[i] : null;
                if (!Equals(want, got))
                {
                    return $"document {i} (in id order) is {got?.ToString() ?? "(none)"}, expected {want?.ToString() ?? "(none)"}";
                }
            }

            return null;
        }

        public static BankState Apply(BankState state, object e)
        {
            var (id, change) = e switch
            {
                AccountDeposited d => (d.Account, Accounts.Deposit(d)),
                AccountWithdrawn w => (w.Account, Accounts.Withdraw(w)),
                AccountRenamed r => (r.Account, Accounts.Rename(r)),
                AccountClosed c => (c.Account, Accounts.Close),
                _ => (string.Empty, (Func<AccountDocument?, AccountDocument?>?)null),
            };
            if (change is null)
            {
                return state;
            }

            var before = state.Accounts.GetValueOrDefault(id);
            var after = change(before);
            var accounts = after is null ? state.Accounts.Remove(id) : state.Accounts.SetItem(id, after);
            return new BankState(accounts, Accounts.Summarize(state.Summary, before, after));
        }
    }

    private sealed record BankState(ImmutableSortedDictionary<string, AccountDocument> Accounts, BankSummary? Summary);

    // Reads during a rebuild: each read must equal the fold at some position at or after the one the reader's last read of
    // the same thing matched (readers never go back, also across the switch).
    private sealed class PrefixReader(BankModel model)
    {
        private readonly Dictionary<string, int> _from = [];

        public async Task SampleAsync(ReadModels readModels, Random random)
        {
            var accounts = (await readModels.QueryAsync(Accounts.Table, new ReadModelQuery())).Items;
            Match("all accounts", accounts, s => BankModel.FirstDifference(s.Accounts.Values.ToList(), accounts) is null);
            var summary = await readModels.GetAsync(Accounts.Summaries, Accounts.SummaryId);
            Match("the summary", summary, s => Equals(s.Summary, summary));
            var id = random.GetItems(AccountIds, 1)[0];
            var account = await readModels.GetAsync(Accounts.Table, id);
            Match($"account '{id}'", account, s => Equals(s.Accounts.GetValueOrDefault(id), account));
        }

        private void Match(string what, object? read, Func<BankState, bool> matches)
        {
            var from = _from.GetValueOrDefault(what);
            for (var i = from; i < model.States.Count; i++)
            {
                if (matches(model.States[i]))
                {
                    _from[what] = i;
                    return;
                }
            }

            var shown = read is IEnumerable<AccountDocument> documents ? $"[{string.Join(", ", documents)}]" : read?.ToString() ?? "(none)";
            throw new XunitException(model.Describe(
                $"during a rebuild, {what} read {shown}, which is the fold of no prefix of the log from event {from} on (the last read matched {from} events)"));
        }
    }

    /// <summary>An account's money came in.</summary>
    [MessageType("projection-conformance-account-deposited")]
    public sealed record AccountDeposited(string Account, int Amount);

    /// <summary>An account's money went out (nothing when it is closed).</summary>
    [MessageType("projection-conformance-account-withdrawn")]
    public sealed record AccountWithdrawn(string Account, int Amount);

    /// <summary>An account was renamed (nothing when it is closed).</summary>
    [MessageType("projection-conformance-account-renamed")]
    public sealed record AccountRenamed(string Account, string Name);

    /// <summary>An account was closed: its document is deleted.</summary>
    [MessageType("projection-conformance-account-closed")]
    public sealed record AccountClosed(string Account);

    /// <summary>An event of the accounts' streams that the projection does not handle.</summary>
    [MessageType("projection-conformance-account-noted")]
    public sealed record AccountNoted(string Account);

    /// <summary>An open account; <paramref name="Version"/> counts the events that changed it since it was opened.</summary>
    public sealed record AccountDocument(string Id, string Name, long Balance, int Version);

    /// <summary>All accounts: how many are open, their total balance, and how many events the projection applied.</summary>
    public sealed record BankSummary(int Open, long Total, int Applied);

    /// <summary>Folds the account events into one document per open account, and a summary it keeps from lookups of them.</summary>
    public sealed class Accounts : Projection
    {
        public const string ProjectionName = "conformance-accounts";

        public const string SummaryId = "bank";

        public static readonly ReadModelTable<AccountDocument> Table = new("conformance_accounts");

        public static readonly ReadModelTable<BankSummary> Summaries = new("conformance_account_summaries");

        public static readonly Func<AccountDocument?, AccountDocument?> Close = _ => null;

        /// <summary>Creates it; <paramref name="before"/> runs before each event is applied (a test's probe or gate).</summary>
        public Accounts(Func<ProjectionContext, CancellationToken, ValueTask>? before = null)
            : base(ProjectionName)
        {
            Table(Table);
            Table(Summaries);
            On<AccountDeposited>((e, context, token) => ApplyAsync(before, context, e.Account, Deposit(e), (t, id, change) => context.UpdateAsync(t, id, change), token));
            On<AccountWithdrawn>((e, context, token) => ApplyAsync(before, context, e.Account, Withdraw(e), (t, id, change) => context.UpdateExistingAsync(t, id, a => change(a)), token));
            On<AccountRenamed>((e, context, token) => ApplyAsync(before, context, e.Account, Rename(e), (t, id, change) => context.UpdateExistingAsync(t, id, a => change(a)), token));
            On<AccountClosed>((e, context, token) => ApplyAsync(before, context, e.Account, Close, (t, id, _) => context.DeleteAsync(t, id), token));
        }

        public static Func<AccountDocument?, AccountDocument?> Deposit(AccountDeposited e) =>
            a => a is null ? new AccountDocument(e.Account, string.Empty, e.Amount, 1) : a with { Balance = a.Balance + e.Amount, Version = a.Version + 1 };

        public static Func<AccountDocument?, AccountDocument?> Withdraw(AccountWithdrawn e) =>
            a => a is null ? null : a with { Balance = a.Balance - e.Amount, Version = a.Version + 1 };

        public static Func<AccountDocument?, AccountDocument?> Rename(AccountRenamed e) =>
            a => a is null ? null : a with { Name = e.Name, Version = a.Version + 1 };

        public static BankSummary Summarize(BankSummary? summary, AccountDocument? before, AccountDocument? after) =>
            new(
                (summary?.Open ?? 0) + (after is null ? 0 : 1) - (before is null ? 0 : 1),
                (summary?.Total ?? 0) + (after?.Balance ?? 0) - (before?.Balance ?? 0),
                (summary?.Applied ?? 0) + 1);

        // The summary follows the account's document as a lookup sees it before the change (the batch's earlier writes
        // included) and as the change leaves it.
        private static async ValueTask ApplyAsync(
            Func<ProjectionContext, CancellationToken, ValueTask>? probe,
            ProjectionContext context,
            string id,
            Func<AccountDocument?, AccountDocument?> change,
            Func<ReadModelTable<AccountDocument>, string, Func<AccountDocument?, AccountDocument?>, ValueTask> write,
            CancellationToken cancellationToken)
        {
            if (probe is not null)
            {
                await probe(context, cancellationToken);
            }

            var before = await context.LookupAsync(Table, id, cancellationToken);
            await write(Table, id, change);
            await context.UpdateAsync(Summaries, SummaryId, s => Summarize(s, before, change(before)));
        }
    }
}
