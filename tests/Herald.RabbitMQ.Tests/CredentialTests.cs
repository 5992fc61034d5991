using Herald.RabbitMQ.Transport;

namespace Herald.RabbitMQ.Tests;

/// <summary>Issue 10: no default credentials outside tests, and no password in any message.</summary>
public sealed class CredentialTests
{
    [Fact]
    public void DefaultConnectionUri_CarriesNoCredentials_AndIsRefusedUntilTheyAreSet()
    {
        var options = new RabbitMqTransportOptions();

        Assert.Equal(string.Empty, options.ConnectionUri.UserInfo);
        var error = Assert.Single(options.Validate());
        Assert.Contains("names no user", error, StringComparison.Ordinal);

        options.ConnectionUri = new Uri("amqp://herald:s3cret@localhost:5672/");
        Assert.Empty(options.Validate());
    }

    [Fact]
    public void ValidationMessage_OfAWrongUri_DoesNotEchoItsPassword()
    {
        var options = new RabbitMqTransportOptions { ConnectionUri = new Uri("http://herald:s3cret@localhost/") };

        var error = Assert.Single(options.Validate());
        Assert.DoesNotContain("s3cret", error, StringComparison.Ordinal);
        Assert.Contains("localhost", error, StringComparison.Ordinal);
    }
}
