using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;

namespace Herald.Conformance;

/// <summary>
/// Reads one observable gauge of Herald's meter for one destination (tag <c>messaging.destination.name</c>), by the value
/// of a state tag: each <see cref="Read"/> collects once and returns what that collection reported.
/// </summary>
public sealed class GaugeReader : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly string _destination;
    private readonly string _stateTag;
    private ConcurrentDictionary<string, long> _round = new(StringComparer.Ordinal);
    private Dictionary<string, long>? _last;

    /// <summary>Starts listening to <paramref name="instrument"/>, keeping the measurements of <paramref name="destination"/>.</summary>
    public GaugeReader(string instrument, string stateTag, string destination)
    {
        _destination = destination;
        _stateTag = stateTag;
        _listener.InstrumentPublished = (published, listener) =>
        {
            if (published.Meter.Name == HeraldDiagnostics.Name && published.Name == instrument)
            {
                listener.EnableMeasurementEvents(published);
            }
        };
        _listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string? name = null, state = null;
            foreach (var tag in tags)
            {
                if (tag.Key == MetricNames.DestinationTag)
                {
                    name = tag.Value as string;
                }
                else if (tag.Key == _stateTag)
                {
                    state = tag.Value as string;
                }
            }

            if (name == _destination && state is not null)
            {
                _round[state] = value;
            }
        });
        _listener.Start();
    }

    /// <summary>Collects once; the values by state reported for the destination, or null when it reported nothing.</summary>
    public Dictionary<string, long>? Read()
    {
        _round = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        _listener.RecordObservableInstruments();
        var round = new Dictionary<string, long>(_round, StringComparer.Ordinal);
        _last = round.Count == 0 ? null : round;
        return _last;
    }

    /// <summary>The last read, for a failure message.</summary>
    public override string ToString() => _last is null ? "nothing" : string.Join(", ", _last.Select(p => $"{p.Key}={p.Value}"));

    /// <inheritdoc />
    public void Dispose() => _listener.Dispose();
}
