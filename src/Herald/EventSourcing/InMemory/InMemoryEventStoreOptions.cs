namespace Herald.EventSourcing.InMemory;

/// <summary>Limits and clock of the <see cref="InMemoryEventStore"/>.</summary>
public sealed record InMemoryEventStoreOptions
{
    /// <summary>The defaults: 1 MiB per event body, the system clock.</summary>
    public static InMemoryEventStoreOptions Default { get; } = new();

    /// <summary>Largest event body accepted, in bytes.</summary>
    public int MaxEventBytes { get; init; } = AppendValidation.DefaultMaxEventBytes;

    /// <summary>The clock that stamps <see cref="RecordedEvent.RecordedAt"/> and snapshots' times.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}
