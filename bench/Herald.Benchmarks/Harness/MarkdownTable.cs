using System.Text;

namespace Herald.Benchmarks.Harness;

/// <summary>A markdown table whose columns are padded, so it reads the same in a terminal and in a file.</summary>
internal sealed class MarkdownTable(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    public MarkdownTable Add(params string[] cells)
    {
        if (cells.Length != headers.Length)
        {
            throw new ArgumentException($"Expected {headers.Length} cells, got {cells.Length}.", nameof(cells));
        }

        _rows.Add(cells);
        return this;
    }

    public override string ToString()
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, _rows.Count == 0 ? 0 : _rows.Max(r => r[i].Length))).ToArray();
        var text = new StringBuilder();
        Line(text, headers, widths, rightAlign: false);
        text.Append('|');
        for (var i = 0; i < widths.Length; i++)
        {
            text.Append(i == 0 ? " :" : " ").Append('-', widths[i] - 1).Append(i == 0 ? " |" : ": |");
        }

        text.AppendLine();
        foreach (var row in _rows)
        {
            Line(text, row, widths, rightAlign: true);
        }

        return text.ToString();
    }

    private static void Line(StringBuilder text, string[] cells, int[] widths, bool rightAlign)
    {
        text.Append('|');
        for (var i = 0; i < cells.Length; i++)
        {
            var cell = rightAlign && i > 0 ? cells[i].PadLeft(widths[i]) : cells[i].PadRight(widths[i]);
            text.Append(' ').Append(cell).Append(" |");
        }

        text.AppendLine();
    }
}
