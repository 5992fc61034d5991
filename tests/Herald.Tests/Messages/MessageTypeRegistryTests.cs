using Herald.Messages;

namespace Herald.Tests.Messages;

public sealed class MessageTypeRegistryTests
{
    [MessageType("thing-happened", Version = 2)]
    private sealed record ThingHappened(string Name);

    private sealed record NotMarked(int Value);

    [Fact]
    public void Register_ByAttribute_LooksUpBothWays()
    {
        var registry = new MessageTypeRegistry();
        registry.Register<ThingHappened>();

        Assert.Equal("thing-happened", registry.GetName(typeof(ThingHappened)));
        Assert.Equal(typeof(ThingHappened), registry.GetType("thing-happened"));
        Assert.Equal(2, registry.GetByName("thing-happened").Version);
    }

    [Fact]
    public void GetByName_Unknown_ThrowsNamingTheType()
    {
        var registry = new MessageTypeRegistry();
        var ex = Assert.Throws<UnknownMessageTypeException>(() => registry.GetByName("who-knows"));
        Assert.Contains("who-knows", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void GetByType_Unregistered_ThrowsNamingTheClrTypeAndTheFix()
    {
        var registry = new MessageTypeRegistry();
        var ex = Assert.Throws<MessageTypeNotRegisteredException>(() => registry.GetByType(typeof(NotMarked)));
        Assert.Contains(nameof(NotMarked), ex.Message, StringComparison.Ordinal);
        Assert.Contains("AddMessageType", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Register_SameNameForTwoTypes_Throws()
    {
        var registry = new MessageTypeRegistry();
        registry.Register<ThingHappened>();
        var ex = Assert.Throws<MessageTypeRegistrationException>(() => registry.Register<NotMarked>("thing-happened"));
        Assert.Contains("thing-happened", ex.Message, StringComparison.Ordinal);
    }

    // The registry refused an open generic definition but took a type still holding a generic parameter (as reflection makes
    // them): no message can be of it, and its name read from the wire failed only at deserialization.
    [Fact]
    public void Register_ATypeStillHoldingAGenericParameter_Throws()
    {
        var registry = new MessageTypeRegistry();
        var partlyOpen = typeof(Dictionary<,>).MakeGenericType(typeof(string), typeof(Dictionary<,>).GetGenericArguments()[1]);

        var ex = Assert.Throws<MessageTypeRegistrationException>(() => registry.Register(partlyOpen, "partly-open"));
        Assert.Contains("closed", ex.Message, StringComparison.Ordinal);
        Assert.False(registry.TryGetByName("partly-open", out _));
    }
}
