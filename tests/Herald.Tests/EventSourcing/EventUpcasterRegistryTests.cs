using System.Text;
using System.Text.Json.Nodes;
using Herald.EventSourcing.Upcasting;
using Herald.Messages;

namespace Herald.Tests.EventSourcing;

public sealed class EventUpcasterRegistryTests
{
    private static Envelope Event(string type, int version, string json) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        SchemaVersion = version,
        Time = DateTimeOffset.UnixEpoch,
        Body = Encoding.UTF8.GetBytes(json),
    };

    private static JsonNode Body(Envelope envelope) => JsonNode.Parse(envelope.Body.Span)!;

    private static JsonNode AddStep(JsonNode body, int step)
    {
        body["steps"] = (body["steps"]?.GetValue<string>() ?? "") + step;
        return body;
    }

    [Fact]
    public void Add_TwiceForTheSameTypeAndVersion_ThrowsNamingBoth()
    {
        var registry = new EventUpcasterRegistry().Add("order-placed", 1, b => b);

        var ex = Assert.Throws<ArgumentException>(() => registry.Add("order-placed", 1, b => b));

        Assert.Contains("order-placed", ex.Message, StringComparison.Ordinal);
        Assert.Contains("v1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Add_FromVersionBelowOne_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new EventUpcasterRegistry().Add("order-placed", 0, b => b));
    }

    [Fact]
    public void Upcast_ChainRegisteredOutOfOrder_RunsEveryStepInVersionOrder()
    {
        var registry = new EventUpcasterRegistry()
            .Add("order-placed", 2, b => AddStep(b, 2))
            .Add("order-placed", 1, b => AddStep(b, 1))
            .Add("order-placed", 3, b => AddStep(b, 3));

        var upcast = registry.Upcast(Event("order-placed", 1, "{}"));

        Assert.Equal(4, upcast.SchemaVersion);
        Assert.Equal("123", Body(upcast)["steps"]!.GetValue<string>());
        Assert.Equal("23", Body(registry.Upcast(Event("order-placed", 2, "{}")))["steps"]!.GetValue<string>());
    }

    [Fact]
    public void Upcast_GapInTheChain_ThrowsNamingTheMissingStep()
    {
        var registry = new EventUpcasterRegistry().Add("order-placed", 1, b => b).Add("order-placed", 3, b => b);

        var ex = Assert.Throws<EventUpcastingException>(() => registry.Upcast(Event("order-placed", 1, "{}")));

        Assert.Equal(2, ex.SchemaVersion);
        Assert.Contains("from v2", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Upcast_EventOlderThanTheFirstUpcaster_ThrowsAsAGap()
    {
        var registry = new EventUpcasterRegistry().Add("order-placed", 2, b => b);

        var ex = Assert.Throws<EventUpcastingException>(() => registry.Upcast(Event("order-placed", 1, "{}")));

        Assert.Equal(1, ex.SchemaVersion);
    }

    [Fact]
    public void Upcast_CurrentVersionOrUnknownType_ReturnsTheSameInstance()
    {
        var registry = new EventUpcasterRegistry().Add("order-placed", 1, b => AddStep(b, 1));
        var current = Event("order-placed", 2, "{}");
        var other = Event("order-paid", 1, "{}");

        Assert.Same(current, registry.Upcast(current));
        Assert.Same(other, registry.Upcast(other));
    }

    [Fact]
    public void Upcast_MixedJsonAndEnvelopeUpcasters_ChainsThroughBoth()
    {
        var registry = new EventUpcasterRegistry()
            .Add("order-placed", 1, b => AddStep(b, 1))
            .Add(new HeaderStamp())
            .Add("order-placed", 3, b => AddStep(b, 3));

        var upcast = registry.Upcast(Event("order-placed", 1, "{}"));

        Assert.Equal(4, upcast.SchemaVersion);
        Assert.Equal("13", Body(upcast)["steps"]!.GetValue<string>());
        Assert.Equal("yes", upcast.GetHeader("stamped"));
    }

    [Fact]
    public void Upcast_UpcasterChangingTheType_Throws()
    {
        var registry = new EventUpcasterRegistry().Add(new Renamer());

        Assert.Throws<EventUpcastingException>(() => registry.Upcast(Event("order-placed", 1, "{}")));
    }

    [Fact]
    public void Upcast_FailingUpcasterOrInvalidJson_ThrowsEventUpcastingExceptionWithTheCause()
    {
        var registry = new EventUpcasterRegistry()
            .Add("order-placed", 1, _ => throw new InvalidOperationException("boom"))
            .Add("order-paid", 1, b => b);

        var failing = Assert.Throws<EventUpcastingException>(() => registry.Upcast(Event("order-placed", 1, "{}")));
        var invalid = Assert.Throws<EventUpcastingException>(() => registry.Upcast(Event("order-paid", 1, "{not json")));

        Assert.IsType<InvalidOperationException>(failing.InnerException);
        Assert.Equal("order-paid", invalid.EventType);
    }

    [Fact]
    public void Upcast_RenamedType_RunsTheFormerNamesSteps_ThenReadsAsTheCurrentName_AndRunsItsSteps()
    {
        var registry = new EventUpcasterRegistry()
            .Add("order-submitted", 2, b => AddStep(b, 2))
            .AddRename("order-created", "order-placed")
            .AddRename("order-placed", "order-submitted")
            .Add("order-placed", 1, b => AddStep(b, 1));

        var fromFirst = registry.Upcast(Event("order-created", 1, "{}"));
        var fromSecond = registry.Upcast(Event("order-placed", 2, "{}"));

        Assert.Equal(("order-submitted", 3, "12"), (fromFirst.MessageType, fromFirst.SchemaVersion, Body(fromFirst)["steps"]!.GetValue<string>()));
        Assert.Equal(("order-submitted", 3, "2"), (fromSecond.MessageType, fromSecond.SchemaVersion, Body(fromSecond)["steps"]!.GetValue<string>()));
        Assert.False(registry.IsEmpty);
        Assert.False(new EventUpcasterRegistry().AddRename("a", "b").IsEmpty);
    }

    [Fact]
    public void Upcast_RenamedTypeAtTheCurrentVersion_OnlyChangesTheName()
    {
        var registry = new EventUpcasterRegistry().AddRename("order-placed", "order-submitted");
        var stored = Event("order-placed", 4, "{\"x\":1}");

        var upcast = registry.Upcast(stored);

        Assert.Equal(("order-submitted", 4), (upcast.MessageType, upcast.SchemaVersion));
        Assert.Equal(stored.Body.ToArray(), upcast.Body.ToArray());
        Assert.Equal(stored.MessageId, upcast.MessageId);
    }

    [Fact]
    public void AddRename_TwiceForOneName_ToItself_OrInACycle_Throws()
    {
        var registry = new EventUpcasterRegistry().AddRename("order-placed", "order-submitted").AddRename("order-submitted", "order-accepted");

        var twice = Assert.Throws<ArgumentException>(() => registry.AddRename("order-placed", "order-other"));
        var itself = Assert.Throws<ArgumentException>(() => registry.AddRename("order-x", "order-x"));
        var cycle = Assert.Throws<ArgumentException>(() => registry.AddRename("order-accepted", "order-placed"));

        Assert.Contains("'order-submitted'", twice.Message, StringComparison.Ordinal);
        Assert.Contains("'order-x'", itself.Message, StringComparison.Ordinal);
        Assert.Contains("cycle", cycle.Message, StringComparison.Ordinal);
        Assert.Equal("order-accepted", registry.Upcast(Event("order-placed", 1, "{}")).MessageType);
    }

    [Theory]
    [InlineData("1,3", 4, "from v2")] // a gap inside the chain
    [InlineData("1,2,3", 5, "from v4")] // the chain ends at v4, the type is at v5
    [InlineData("2", 4, "from v3")] // the chain starts where the oldest events are, and ends short
    [InlineData("1,2,3", 3, "registered at v3")] // the step from v3 would migrate today's v3 events past the type
    public void ValidateAgainst_AChainThatDoesNotReachTheRegisteredVersionExactly_IsRefused_NamingTheStep(string steps, int registeredVersion, string expected)
    {
        var registry = new EventUpcasterRegistry();
        foreach (var step in steps.Split(','))
        {
            registry.Add("order-placed", int.Parse(step, System.Globalization.CultureInfo.InvariantCulture), b => b);
        }

        var messageTypes = new MessageTypeRegistry();
        messageTypes.Register<Placed>("order-placed", registeredVersion);

        var ex = Assert.Throws<MessageTypeRegistrationException>(() => registry.ValidateAgainst(messageTypes));

        Assert.Contains("'order-placed'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ValidateAgainst_AFormerNamesChainThatStopsBelowTheCurrentNamesSteps_IsRefused()
    {
        // "order-created" events reach "order-placed" at v2; "order-placed" is at v3 and migrates only from v1... nothing from v2.
        var registry = new EventUpcasterRegistry().AddRename("order-created", "order-placed").Add("order-created", 1, b => b);
        var messageTypes = new MessageTypeRegistry();
        messageTypes.Register<Placed>("order-placed", 3);

        var ex = Assert.Throws<MessageTypeRegistrationException>(() => registry.ValidateAgainst(messageTypes));

        Assert.Contains("'order-created'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("from v2", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ValidateAgainst_ChainsAndRenamesThatReachTheRegisteredVersion_Pass()
    {
        var registry = new EventUpcasterRegistry()
            .AddRename("order-created", "order-placed")
            .Add("order-created", 1, b => b)          // order-created v1 -> v2, then read as order-placed v2
            .Add("order-placed", 2, b => b)           // order-placed v2 -> v3
            .Add("order-placed", 3, b => b)           // order-placed v3 -> v4
            .AddRename("order-old", "order-placed")   // a rename alone: its versions are checked on read
            .Add("not-a-registered-type", 2, b => b); // a type only read through store.WithUpcasting
        var messageTypes = new MessageTypeRegistry();
        messageTypes.Register<Placed>("order-placed", 4);

        registry.ValidateAgainst(messageTypes);
    }

    [Fact]
    public void JsonEventUpcaster_UsedAlone_SetsTheNextSchemaVersion()
    {
        var upcaster = new RenameField();

        var upcast = upcaster.Upcast(Event("order-placed", 1, "{\"qty\":3}"));

        Assert.Equal(2, upcast.SchemaVersion);
        Assert.Equal(3, Body(upcast)["quantity"]!.GetValue<int>());
    }

    private sealed record Placed(int Quantity);

    private sealed class HeaderStamp : IEventUpcaster
    {
        public string EventType => "order-placed";

        public int FromVersion => 2;

        public Envelope Upcast(Envelope envelope) => envelope.WithHeader("stamped", "yes");
    }

    private sealed class Renamer : IEventUpcaster
    {
        public string EventType => "order-placed";

        public int FromVersion => 1;

        public Envelope Upcast(Envelope envelope) => envelope with { MessageType = "order-submitted" };
    }

    private sealed class RenameField() : JsonEventUpcaster("order-placed", 1)
    {
        protected override JsonNode Upcast(JsonNode body, Envelope envelope)
        {
            var quantity = body["qty"]!.GetValue<int>();
            return new JsonObject { ["quantity"] = quantity };
        }
    }
}
