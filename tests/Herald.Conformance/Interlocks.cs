namespace Herald.Conformance;

/// <summary>Lock-free helpers the suites' handlers use to record what ran at once.</summary>
public static class Interlocks
{
    /// <summary>Raises <paramref name="target"/> to <paramref name="value"/> unless another thread already put it higher.</summary>
    public static void Max(ref int target, int value)
    {
        var current = Volatile.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }
}
