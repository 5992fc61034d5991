using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// A stable hash of an exception's type and the methods of its top stack frames, without line numbers, offsets or
/// messages: failures with one cause share a fingerprint across messages, processes and rebuilds, so dead letters group.
/// </summary>
internal static class ExceptionFingerprint
{
    /// <summary>How many of the top stack frames count.</summary>
    public const int FrameCount = 5;

    /// <summary>Computes the fingerprint of an exception (32 lowercase hex characters).</summary>
    public static string Compute(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return Compute(exception.GetType().FullName ?? exception.GetType().Name, TopFrames(exception));
    }

    /// <summary>Computes the fingerprint from an error type name and method names (for errors that arrive without an exception, such as a native dead-letter queue's).</summary>
    public static string Compute(string errorType, IEnumerable<string> frames)
    {
        ArgumentNullException.ThrowIfNull(errorType);
        ArgumentNullException.ThrowIfNull(frames);
        var text = new StringBuilder(errorType);
        foreach (var frame in frames.Take(FrameCount))
        {
            text.Append('\n').Append(frame);
        }

        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
        return Convert.ToHexStringLower(hash.AsSpan(0, 16));
    }

    /// <summary>The method names that make up the fingerprint, top frame first: <c>Namespace.Type.Method</c>, async and lambda names unmangled.</summary>
    public static IReadOnlyList<string> TopFrames(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var frames = new List<string>(FrameCount);
        foreach (var frame in new StackTrace(exception, fNeedFileInfo: false).GetFrames())
        {
            if (frame.GetMethod() is not { } method || IsPlumbing(method))
            {
                continue;
            }

            frames.Add(Describe(method));
            if (frames.Count == FrameCount)
            {
                break;
            }
        }

        return frames;
    }

    private static bool IsPlumbing(MethodBase method)
    {
        // Frames of the async machinery and of rethrows differ between runtimes and say nothing about the cause.
        var ns = method.DeclaringType?.Namespace;
        return ns is "System.Runtime.CompilerServices" or "System.Runtime.ExceptionServices" or "System.Threading.Tasks";
    }

    private static string Describe(MethodBase method)
    {
        var type = method.DeclaringType;
        var name = method.Name;

        // An async method runs as MoveNext of a generated type "<Name>d__N" nested in the real type; lambdas live in
        // "<>c" or "<>c__DisplayClassN_M" types with names like "<Name>b__0_1". The numbers change between builds.
        while (type is not null && (type.IsDefined(typeof(CompilerGeneratedAttribute), inherit: false) || type.Name.StartsWith('<')))
        {
            if (type.Name.StartsWith('<') && type.Name.LastIndexOf('>') is var end and > 1)
            {
                name = type.Name[1..end];
            }

            type = type.DeclaringType;
        }

        if (name.StartsWith('<') && name.IndexOf('>', StringComparison.Ordinal) is var close and > 1)
        {
            name = name[1..close] + "+lambda";
        }

        return $"{type?.FullName ?? "?"}.{name}";
    }
}
