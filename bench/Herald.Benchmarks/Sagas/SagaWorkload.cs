using System.Globalization;
using Herald.Benchmarks.InProcess;

namespace Herald.Benchmarks.Sagas;

/// <summary>
/// The same work for every contender: N new orders, each taken through submitted → payment accepted → shipped (final),
/// one phase per event. A phase publishes its N events and waits until all of them are finished before the next begins,
/// so an event never reaches its instance before the one that moves the instance into the state that expects it.
/// </summary>
internal static class SagaWorkload
{
    /// <summary>The states an instance passes through: after submission, after payment, and the final one.</summary>
    public const string AwaitingPayment = "AwaitingPayment";

    public const string AwaitingShipment = "AwaitingShipment";

    public const string Shipped = "Shipped";

    /// <summary>Events per order: one per phase.</summary>
    public const int EventsPerOrder = 3;

    /// <summary>Runs the three phases for <paramref name="orders"/> new orders; returns their ids.</summary>
    public static async Task<Guid[]> RunAsync(ISagaContender contender, int orders, int producers, CancellationToken cancellationToken)
    {
        var ids = new Guid[orders];
        for (var i = 0; i < ids.Length; i++)
        {
            ids[i] = Guid.CreateVersion7();
        }

        await PhaseAsync(contender, orders, producers, i => contender.PublishAsync(new OrderSubmitted(ids[i], Customer(i), Amount(i)), cancellationToken), cancellationToken).ConfigureAwait(false);
        await PhaseAsync(contender, orders, producers, i => contender.PublishAsync(new PaymentAccepted(ids[i], Amount(i), $"pay-{i:D8}"), cancellationToken), cancellationToken).ConfigureAwait(false);
        await PhaseAsync(contender, orders, producers, i => contender.PublishAsync(new OrderShipped(ids[i], $"track-{i:D8}"), cancellationToken), cancellationToken).ConfigureAwait(false);
        return ids;
    }

    /// <summary>Fails unless every order ended in the final state: no event was lost, ignored or handled out of turn.</summary>
    public static async Task CheckFinishedAsync(ISagaContender contender, Guid[] ids, CancellationToken cancellationToken)
    {
        foreach (var id in ids)
        {
            var state = await contender.StateOfAsync(id, cancellationToken).ConfigureAwait(false);
            if (state != Shipped)
            {
                throw new InvalidOperationException($"{contender.Name}: order {id} ended in state '{state ?? "(no instance)"}', expected '{Shipped}'.");
            }
        }
    }

    private static async Task PhaseAsync(ISagaContender contender, int orders, int producers, Func<int, ValueTask> publish, CancellationToken cancellationToken)
    {
        contender.Finished.Reset(orders);
        await Producers.RunAsync(orders, producers, publish, cancellationToken).ConfigureAwait(false);
        await contender.Finished.WaitAsync(Producers.Timeout(orders), cancellationToken).ConfigureAwait(false);
    }

    private static string Customer(int i) => "customer-" + (i % 1000).ToString("D4", CultureInfo.InvariantCulture);

    private static decimal Amount(int i) => 10 + (i % 500);
}
