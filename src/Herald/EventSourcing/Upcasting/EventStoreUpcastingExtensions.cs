namespace Herald.EventSourcing.Upcasting;

/// <summary>Applies upcasting to any event store.</summary>
public static class EventStoreUpcastingExtensions
{
    /// <summary>Returns the store wrapped in an <see cref="UpcastingEventStore"/>: <c>store.WithUpcasting(upcasters)</c>.</summary>
    public static IEventStore WithUpcasting(this IEventStore store, EventUpcasterRegistry upcasters) => new UpcastingEventStore(store, upcasters);
}
