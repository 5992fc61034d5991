using Herald.Hosting;
using Herald.Internal;
using Herald.Streams;
using Herald.Streams.Hosting;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers stream processors that run in the background of the host.</summary>
public static class StreamsHeraldBuilderExtensions
{
    /// <summary>
    /// Builds a topology (with a <see cref="StreamSource.Transport"/> source, its message types are handled by this host's
    /// endpoint) with <paramref name="build"/> (checked now: an invalid one throws here) and runs it as the stream
    /// processor <paramref name="name"/> while the host runs, restarting it from its last commit after a failure. Resolve
    /// <see cref="StreamProcessors"/> to query its state.
    /// </summary>
    public static HeraldBuilder AddStream(this HeraldBuilder builder, string name, Action<StreamBuilder> build, StreamProcessorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(build);
        var streams = new StreamBuilder();
        build(streams);
        var registration = new StreamRegistration(name, streams.Build(), options ?? StreamProcessorOptions.Default);
        StreamProcessor.ValidateName(name, registration.Topology, registration.Options);
        if (builder.Services.Any(d => d.ServiceType == typeof(StreamRegistration) && ((StreamRegistration?)d.ImplementationInstance)?.Name == name))
        {
            throw new InvalidOperationException($"A stream named '{name}' is registered already; each stream needs its own name (its checkpoint and state are kept under it).");
        }

        builder.Services.AddSingleton(registration);
        if (registration.Options.Source.IsTransport)
        {
            // The endpoint's consuming chain hands each message of a source type to one handler, which feeds every
            // transport-source stream reading it, in the handler's unit of work (with its inbox mark).
            foreach (var type in registration.Topology.SourceTypes)
            {
                builder.AddHandler(typeof(StreamTransportHandler<>).MakeGenericType(type), ServiceLifetime.Singleton);
            }

            // A key-partitioned transport (Kafka) tells which of its partitions this host holds: the state follows them.
            builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IBrokerPartitionObserver, StreamPartitionObserver>());
        }

        builder.Services.TryAddSingleton(sp => new StreamProcessors(sp.GetServices<StreamRegistration>(), sp));
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, StreamHostedService>());
        return builder;
    }
}
