using Herald.Conformance.Transport;
using Herald.Hosting;

namespace Herald.Tests.Transport;

/// <summary>The in-memory transport against <see cref="LivenessConformance"/>.</summary>
public sealed class InMemoryLivenessTests : LivenessConformance
{
    protected override void UseTransport(HeraldBuilder herald) => herald.UseInMemoryTransport();
}
