namespace Orders.Tests;

/// <summary>Polls a condition until it holds or a deadline passes; never a fixed sleep.</summary>
public static class Eventually
{
    // Generous: on a loaded CI machine the read model can trail the event store by tens of seconds.
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(90);

    public static Task UntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null) =>
        UntilAsync(condition, () => what, timeout);

    public static async Task UntilAsync(Func<Task<bool>> condition, Func<string> what, TimeSpan? timeout = null)
    {
        using var deadline = new CancellationTokenSource(timeout ?? DefaultTimeout);
        while (!await condition())
        {
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(50), deadline.Token);
            }
            catch (OperationCanceledException)
            {
                if (await condition())
                {
                    return;
                }

                throw new TimeoutException($"Timed out waiting until {what()}.");
            }
        }
    }
}
