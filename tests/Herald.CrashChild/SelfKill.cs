using System.Diagnostics;

namespace Herald.CrashChild;

/// <summary>The child's own crash: "killing &lt;id&gt;" for the parent, then SIGKILL to itself.</summary>
internal static class SelfKill
{
    public static void Now(Guid messageId)
    {
        // Console.Out flushes every line, so the parent reads this one before the pipe closes.
        Console.WriteLine("killing " + messageId);
        using var self = Process.GetCurrentProcess();
        self.Kill();

        // A signal to itself is delivered before kill(2) returns; this only makes sure nothing after the kill runs.
        Thread.Sleep(Timeout.Infinite);
    }
}
