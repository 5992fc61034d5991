using System.Reflection;

namespace Herald.Benchmarks.Harness;

/// <summary>The version of the package a type ships in, read from its assembly, so a results file never states one by hand.</summary>
internal static class PackageVersion
{
    public static string Of(Type type)
    {
        var assembly = type.Assembly;
        var informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        if (informational is { Length: > 0 })
        {
            // "9.58.0+commit": the package version is the part before the build metadata.
            var plus = informational.IndexOf('+', StringComparison.Ordinal);
            return plus < 0 ? informational : informational[..plus];
        }

        return assembly.GetName().Version?.ToString(3) ?? "(unknown version)";
    }
}
