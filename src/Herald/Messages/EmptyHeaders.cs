using System.Collections.Frozen;

namespace Herald.Messages;

internal static class EmptyHeaders
{
    public static readonly IReadOnlyDictionary<string, string> Instance = FrozenDictionary<string, string>.Empty;
}
