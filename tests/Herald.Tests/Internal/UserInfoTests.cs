using Herald.Internal;

namespace Herald.Tests.Internal;

/// <summary>Issue 10: user info is redacted from every message an adapter builds from a URI or connection string.</summary>
public sealed class UserInfoTests
{
    [Theory]
    [InlineData("amqp://guest:guest@127.0.0.1:5672/", "amqp://***@127.0.0.1:5672/")]
    [InlineData("could not reach amqps://herald:p%40ss@broker/vhost (refused)", "could not reach amqps://***@broker/vhost (refused)")]
    [InlineData("redis://:secret@cache:6379", "redis://***@cache:6379")]
    [InlineData("Host=db;Username=herald;Password=s3cret;Database=x", "Host=db;Username=herald;Password=***;Database=x")]
    [InlineData("cache:6379,password=s3cret,ssl=true", "cache:6379,password=***,ssl=true")]
    [InlineData("Data Source=app.db;Pwd = s3cret", "Data Source=app.db;Pwd =***")]
    [InlineData("amqp://localhost:5672/ has no secret", "amqp://localhost:5672/ has no secret")]
    public void Redact_TakesOutUserInfoAndPasswords_AndLeavesTheRest(string text, string expected) =>
        Assert.Equal(expected, UserInfo.Redact(text));

    [Fact]
    public void Redact_OfAUri_DropsItsUserInfo() =>
        Assert.Equal("amqp://***@host/", UserInfo.Redact(new Uri("amqp://user:pw@host/")));
}
