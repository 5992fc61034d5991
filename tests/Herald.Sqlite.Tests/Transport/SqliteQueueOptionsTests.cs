using Herald.Internal;
using Herald.Sqlite.Transport;
using Microsoft.Extensions.Options;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>Issue 10: a write may not wait for the file's lock longer than a third of the lease it would renew.</summary>
public sealed class SqliteQueueOptionsTests
{
    [Fact]
    public void BusyTimeout_ByDefault_IsAThirdOfTheLease()
    {
        var options = new SqliteQueueOptions { ConnectionString = "queue.db", LeaseDuration = TimeSpan.FromSeconds(3) };

        Assert.Equal(TimeSpan.FromSeconds(1), options.BusyTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), new SqliteQueueOptions().BusyTimeout);
        OptionsProblems.Of(options, SqliteQueueOptions.Check).ThrowIfAny();
    }

    [Fact]
    public void BusyTimeout_LongerThanAThirdOfTheLease_IsRefused()
    {
        var options = new SqliteQueueOptions
        {
            ConnectionString = "queue.db",
            LeaseDuration = TimeSpan.FromSeconds(30),
            BusyTimeout = TimeSpan.FromSeconds(30),
        };

        var error = Assert.Throws<OptionsValidationException>(() => OptionsProblems.Of(options, SqliteQueueOptions.Check).ThrowIfAny());
        Assert.Contains("BusyTimeout is 00:00:30; it must be at most a third of LeaseDuration", error.Message, StringComparison.Ordinal);
    }
}
