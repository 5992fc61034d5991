using System.Globalization;
using Herald.Benchmarks.Harness;

namespace Herald.Benchmarks.Scale;

/// <summary>One row of the scale results: a measurement taken at every size the run reached.</summary>
/// <param name="Name">What was measured.</param>
/// <param name="Unit">The unit of the values (ev/s, msg/s, MB, ...).</param>
/// <param name="HigherIsBetter">True for a rate (cost is its inverse), false for a cost such as memory.</param>
internal sealed record Curve(string Name, string Unit, bool HigherIsBetter)
{
    /// <summary>The target of issue 16: the cost at the largest size within 1.5× of the cost at the smallest.</summary>
    public const double Target = 1.5;

    public SortedDictionary<long, double> Points { get; } = [];

    /// <summary>cost(largest) / cost(smallest): above 1 the cost grew.</summary>
    public double? Ratio
    {
        get
        {
            if (Points.Count < 2)
            {
                return null;
            }

            var first = Points.First().Value;
            var last = Points.Last().Value;
            return HigherIsBetter ? first / last : last / first;
        }
    }

    public static string Size(long size) => size switch
    {
        >= 1_000_000 when size % 1_000_000 == 0 => (size / 1_000_000).ToString(CultureInfo.InvariantCulture) + " M",
        >= 1_000_000 => (size / 1_000_000.0).ToString("0.#", CultureInfo.InvariantCulture) + " M",
        >= 1_000 => (size / 1_000).ToString(CultureInfo.InvariantCulture) + " k",
        _ => size.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>A table of curves sharing their sizes: a column per size, then the ratio and whether it meets the target.</summary>
    public static MarkdownTable Table(string first, IReadOnlyList<Curve> curves)
    {
        var sizes = curves.SelectMany(c => c.Points.Keys).Distinct().Order().ToList();
        var table = new MarkdownTable([first, "unit", .. sizes.Select(Size), "cost(largest)/cost(first)", "≤ 1.5×"]);
        foreach (var curve in curves)
        {
            var ratio = curve.Ratio;
            table.Add([
                curve.Name,
                curve.Unit,
                .. sizes.Select(s => curve.Points.TryGetValue(s, out var v) ? Format(v) : "–"),
                ratio is { } r ? r.ToString("0.00", CultureInfo.InvariantCulture) + "×" : "–",
                ratio is { } q ? (q <= Target ? "yes" : "**no**") : "–",
            ]);
        }

        return table;
    }

    private static string Format(double value) => value switch
    {
        >= 100 => value.ToString("N0", CultureInfo.InvariantCulture),
        >= 1 => value.ToString("0.0", CultureInfo.InvariantCulture),
        _ => value.ToString("0.000", CultureInfo.InvariantCulture),
    };
}
