namespace Herald.Conformance;

/// <summary>Waits for a condition with a deadline instead of sleeping a fixed time.</summary>
public static class Eventually
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(5);

    /// <summary>The default deadline for conditions that should hold quickly.</summary>
    public static TimeSpan DefaultTimeout { get; } = TimeSpan.FromSeconds(15);

    /// <summary>Polls the condition until it holds; throws a <see cref="TimeoutException"/> with the description when the deadline passes.</summary>
    public static async Task UntilAsync(Func<bool> condition, string description, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var deadline = DateTime.UtcNow + (timeout ?? DefaultTimeout);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out after {timeout ?? DefaultTimeout} waiting until {description}.");
            }

            await Task.Delay(PollInterval).ConfigureAwait(false);
        }
    }

    /// <summary>Polls until the function returns a value; throws with the description when the deadline passes.</summary>
    public static async Task<T> ValueAsync<T>(Func<T?> probe, string description, TimeSpan? timeout = null)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(probe);
        T? value = null;
        await UntilAsync(() => (value = probe()) is not null, description, timeout).ConfigureAwait(false);
        return value!;
    }

    /// <summary>Polls the asynchronous condition until it holds; throws a <see cref="TimeoutException"/> with the description when the deadline passes.</summary>
    public static Task UntilAsync(Func<ValueTask<bool>> condition, string description, TimeSpan? timeout = null) =>
        UntilAsync(condition, () => description, timeout);

    /// <summary>
    /// Polls the asynchronous condition until it holds; when the deadline passes, throws a <see cref="TimeoutException"/>
    /// with the description as it reads then (what the last poll saw).
    /// </summary>
    public static async Task UntilAsync(Func<ValueTask<bool>> condition, Func<string> description, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        ArgumentNullException.ThrowIfNull(description);
        var deadline = DateTime.UtcNow + (timeout ?? DefaultTimeout);
        while (!await condition().ConfigureAwait(false))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out after {timeout ?? DefaultTimeout} waiting until {description()}.");
            }

            await Task.Delay(PollInterval).ConfigureAwait(false);
        }
    }

    /// <summary>Polls until the asynchronous function returns a value; throws with the description when the deadline passes.</summary>
    public static async Task<T> ValueAsync<T>(Func<ValueTask<T?>> probe, string description, TimeSpan? timeout = null)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(probe);
        T? value = null;
        await UntilAsync(async () => (value = await probe().ConfigureAwait(false)) is not null, description, timeout).ConfigureAwait(false);
        return value!;
    }
}
