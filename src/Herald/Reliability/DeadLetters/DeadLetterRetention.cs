namespace Herald.Reliability.DeadLetters;

/// <summary>
/// Trims an endpoint's dead letters to the retention (issue 10): deletes those that last failed more than a maximum age
/// ago, then the oldest (lowest ids, which are time-ordered) beyond a maximum count. Uses the store's port only, so every
/// store gets it; the count trim deletes listed ids one by one, so two nodes trimming at once delete the same ones rather
/// than twice as many.
/// </summary>
internal static class DeadLetterRetention
{
    /// <summary>Trims <paramref name="endpoint"/>'s dead letters; returns how many were deleted.</summary>
    public static async ValueTask<long> TrimAsync(
        IDeadLetterStore store,
        string endpoint,
        TimeSpan? maxAge,
        int? maxCount,
        int batchSize,
        DateTimeOffset now,
        CancellationToken cancellationToken)
    {
        long deleted = 0;
        if (maxAge is { } age)
        {
            var expired = new DeadLetterQuery { Endpoint = endpoint, FailedBefore = now - age, Limit = batchSize };
            int round;
            do
            {
                round = await store.DeleteManyAsync(expired, cancellationToken).ConfigureAwait(false);
                deleted += round;
            }
            while (round == batchSize);
        }

        if (maxCount is { } max)
        {
            var excess = await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }, cancellationToken).ConfigureAwait(false) - max;
            while (excess > 0)
            {
                var oldest = await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, Limit = (int)Math.Min(excess, batchSize) }, cancellationToken).ConfigureAwait(false);
                if (oldest.Count == 0)
                {
                    break;
                }

                foreach (var deadLetter in oldest)
                {
                    if (await store.DeleteAsync(deadLetter.Id, cancellationToken).ConfigureAwait(false))
                    {
                        deleted++;
                    }
                }

                excess -= oldest.Count;
            }
        }

        return deleted;
    }
}
