using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.Messages;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Tests.Fuzzing;

/// <summary>
/// Issue 10: generated envelopes (hostile types, times, content types, headers, bodies; with and without a transport's
/// decode failure) go through an endpoint's real consuming chain (<see cref="FuzzPipeline"/>). Every one is handled once or
/// dead-lettered once with a reason; nothing throws out of the chain and nothing is nacked for a redelivery that would
/// only fail again. The transports' decode fuzz tests feed the same chain with what their codecs make of generated wire input.
/// </summary>
public sealed class PipelineFuzzTests(ITestOutputHelper output)
{
    [Fact]
    public async Task GeneratedDeliveries_AreEachHandledOrDeadLetteredWithAReason_AndNoneCrashesTheChain_Issue10()
    {
        await using var pipeline = await FuzzPipeline.StartAsync();

        var valid =
            from id in Gen.Guid
            from body in FuzzInputs.ValidBody
            from headers in FuzzInputs.Headers
            select (Envelope: new Envelope
            {
                MessageId = id,
                MessageType = FuzzInputs.OrderType,
                Time = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero),
                ContentType = ContentTypes.Json,
                Headers = headers,
                Body = body,
                DeliveryAttempt = 1,
            }, Malformed: false);
        var hostile =
            from id in Gen.OneOf(Gen.Const(Guid.Empty), Gen.Guid)
            from type in Gen.Frequency((20, FuzzInputs.MessageType), (1, Gen.Const((string)null!)))
            from version in Gen.OneOf(Gen.Int[-3, 4], Gen.Const(int.MaxValue), Gen.Const(int.MinValue))
            from time in FuzzInputs.Time
            from contentType in Gen.Frequency((20, FuzzInputs.ContentType), (1, Gen.Const((string)null!)))
            from headers in FuzzInputs.Headers
            from body in FuzzInputs.Body
            from attempt in Gen.OneOf(Gen.Int[0, 4], Gen.Const(int.MaxValue), Gen.Const(int.MinValue), Gen.Const(-1))
            from malformed in Gen.Bool
            select (Envelope: new Envelope
            {
                MessageId = id,
                MessageType = type,
                SchemaVersion = version,
                Time = time,
                ContentType = contentType,
                Headers = headers,
                Body = body,
                DeliveryAttempt = attempt,
            }, Malformed: malformed);

        var cases = await Fuzz.RunAsync(
            Gen.Frequency((1, valid), (2, hostile)),
            sample => pipeline.DeliverAsync(sample.Envelope, sample.Malformed ? new MalformedMessageException("Malformed message: generated") : null),
            output.WriteLine);

        output.WriteLine(pipeline.Summary(cases));
        Assert.Equal(cases, pipeline.Handled + pipeline.DeadLettered);
        if (Fuzz.IsFullRun)
        {
            Assert.True(pipeline.Handled > cases / 10, "the generator reaches the handler too");
            Assert.True(pipeline.Causes.Count >= 4, "the generator reaches many kinds of poison");
        }
    }
}
