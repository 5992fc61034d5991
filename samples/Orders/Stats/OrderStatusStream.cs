using Herald.Persistence;
using Herald.Streams;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orders.ReadModel;

namespace Orders.Stats;

/// <summary>
/// The stream "orders per status per minute": every order event of <c>$all</c> (placed, stock reserved, paid, confirmed,
/// cancelled) counted per status in 1-minute tumbling windows of the event's time, its state kept with the profile's
/// stream state store (SQLite or PostgreSQL) and committed with its checkpoint. <c>GET /stats/orders-per-status</c>
/// answers from it (an interactive query).
/// </summary>
/// <remarks>
/// One instance at a time runs it (the leader of <c>stream:orders-per-status</c>): two processors of one name on one
/// database would write each other's state and checkpoint. The others answer 503 and take over when the leader goes.
/// </remarks>
public sealed partial class OrderStatusStream(IServiceProvider services, ILeaderElection election, ILogger<OrderStatusStream> logger) : BackgroundService
{
    public const string Name = "orders-per-status";
    public const string Store = "orders-per-status-per-minute";

    /// <summary>The statuses it counts, as the read model names them, in the order of an order's life.</summary>
    public static readonly IReadOnlyList<string> Statuses = [OrderStates.Placed, OrderStates.StockReserved, OrderStates.Paid, OrderStates.Confirmed, OrderStates.Cancelled];

    public static readonly TimeSpan WindowSize = TimeSpan.FromMinutes(1);

    private static readonly TimeSpan RetryInterval = TimeSpan.FromSeconds(5);

    // $all is in commit order; the events' times are taken before their commits, so concurrent handlers may commit them a
    // little out of time order. A minute closes 30 s + 30 s after its end, and stays queryable for a day.
    private static readonly StreamProcessorOptions Options = new() { AllowedOutOfOrderness = TimeSpan.FromSeconds(30) };

    private StreamProcessor? _running;

    /// <summary>The processor while this instance runs the stream, else null.</summary>
    public StreamProcessor? Processor => Volatile.Read(ref _running);

    /// <summary>Status from the event type: each stream maps its events to the status they move an order to, keyed by it.</summary>
    public static StreamTopology Topology()
    {
        var builder = new StreamBuilder();
        builder.Stream<OrderPlaced>().Map(_ => OrderStates.Placed)
            .Merge(builder.Stream<StockReserved>().Map(_ => OrderStates.StockReserved))
            .Merge(builder.Stream<PaymentCharged>().Map(_ => OrderStates.Paid))
            .Merge(builder.Stream<OrderConfirmed>().Map(_ => OrderStates.Confirmed))
            .Merge(builder.Stream<OrderCancelled>().Map(_ => OrderStates.Cancelled))
            .GroupBy(status => status)
            .WindowedBy(TumblingWindows.Of(WindowSize).WithGrace(TimeSpan.FromSeconds(30)))
            .RetainClosedWindowsFor(TimeSpan.FromDays(1))
            .Count(Store);
        return builder.Build();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            LeaderLease? lease = null;
            try
            {
                lease = await election.TryAcquireAsync("stream:" + Name, stoppingToken);
            }
            catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
            {
                // The database is unreachable for now: an unhandled exception here would stop the whole host.
                LogFailed(logger, ex, Name, RetryInterval);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (lease is not null)
            {
                await using (lease)
                {
                    await RunWhileLeadingAsync(lease, stoppingToken);
                }
            }

            // Not the leader, or the run ended (a failed commit, a lost lease): try again shortly, from the last commit.
            try
            {
                await Task.Delay(RetryInterval, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task RunWhileLeadingAsync(LeaderLease lease, CancellationToken stoppingToken)
    {
        await using var processor = new StreamProcessor(Name, Topology(), services, Options);
        using var leading = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, lease.LeadershipLost);
        try
        {
            await processor.StartAsync(leading.Token);
            Volatile.Write(ref _running, processor);
            await processor.Completion.WaitAsync(leading.Token);
        }
        catch (OperationCanceledException) when (leading.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            LogFailed(logger, ex, Name, RetryInterval);
        }
        finally
        {
            Volatile.Write(ref _running, null);
        }
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "The stream {Stream} failed; it starts again from its last commit in {Delay}")]
    private static partial void LogFailed(ILogger logger, Exception exception, string stream, TimeSpan delay);
}

/// <summary>Registers the stream; the profile's persistence registers its state store.</summary>
internal static class OrderStatusStreamRegistration
{
    public static IServiceCollection AddOrderStatusStream(this IServiceCollection services)
    {
        services.AddSingleton<OrderStatusStream>();
        services.AddHostedService(sp => sp.GetRequiredService<OrderStatusStream>());
        return services;
    }
}
