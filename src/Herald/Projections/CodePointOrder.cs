namespace Herald.Projections;

/// <summary>
/// Orders strings by Unicode code point, as SQLite (UTF-8 bytes) and PostgreSQL (<c>COLLATE "C"</c>) order document ids.
/// UTF-16 ordinal order differs above U+FFFF: a surrogate pair (D800–DFFF) sorts before U+E000–U+FFFF there, after it here.
/// </summary>
internal sealed class CodePointOrder : IComparer<string>
{
    public static readonly CodePointOrder Instance = new();

    public int Compare(string? x, string? y)
    {
        if (x is null || y is null)
        {
            return x is null ? (y is null ? 0 : -1) : 1;
        }

        var common = x.AsSpan().CommonPrefixLength(y);
        if (common == x.Length || common == y.Length)
        {
            return x.Length - y.Length;
        }

        return Rank(x[common]) - Rank(y[common]);
    }

    // Surrogates move above U+E000–U+FFFF, which move down into their place: the order of the code points they stand for.
    private static int Rank(char c) => c < 0xD800 ? c : c < 0xE000 ? c + 0x2000 : c - 0x800;
}
