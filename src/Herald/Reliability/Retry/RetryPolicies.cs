using System.Collections.Concurrent;

namespace Herald.Reliability.Retry;

/// <summary>
/// The retry configuration of a host, in three layers applied in this order whatever the order of the calls: global,
/// then per endpoint, then per message type. Each change is validated at once, so an impossible policy fails when it
/// is configured, not when a message first fails.
/// </summary>
internal sealed class RetryPolicies
{
    private readonly List<Action<RetryPolicyBuilder>> _global = [];
    private readonly Dictionary<string, List<Action<RetryPolicyBuilder>>> _endpoints = new(StringComparer.Ordinal);
    private readonly Dictionary<Type, List<Action<RetryPolicyBuilder>>> _messageTypes = [];
    private readonly ConcurrentDictionary<(string Endpoint, Type MessageType), RetryPolicy> _cache = new();
    private readonly Lock _gate = new();

    public void ConfigureGlobal(Action<RetryPolicyBuilder> configure) => Add(_global, configure);

    public void ConfigureEndpoint(string endpoint, Action<RetryPolicyBuilder> configure)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        Add(_endpoints, endpoint, configure);
    }

    public void ConfigureMessageType(Type messageType, Action<RetryPolicyBuilder> configure)
    {
        ArgumentNullException.ThrowIfNull(messageType);
        Add(_messageTypes, messageType, configure);
    }

    /// <summary>The policy for a message type handled at an endpoint.</summary>
    public RetryPolicy Get(string endpoint, Type messageType) =>
        _cache.GetOrAdd((endpoint, messageType), static (key, self) => self.Build(key.Endpoint, key.MessageType), this);

    private void Add<TKey>(Dictionary<TKey, List<Action<RetryPolicyBuilder>>> layers, TKey key, Action<RetryPolicyBuilder> configure)
        where TKey : notnull
    {
        lock (_gate)
        {
            if (!layers.TryGetValue(key, out var actions))
            {
                layers[key] = actions = [];
            }

            Add(actions, configure);
        }
    }

    private void Add(List<Action<RetryPolicyBuilder>> layer, Action<RetryPolicyBuilder> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        lock (_gate)
        {
            layer.Add(configure);
            try
            {
                ValidateAll();
            }
            catch
            {
                // Leave the configuration as it was before the rejected change.
                layer.RemoveAt(layer.Count - 1);
                throw;
            }

            _cache.Clear();
        }
    }

    private void ValidateAll()
    {
        Build(endpoint: null, messageType: null);
        foreach (var endpoint in _endpoints.Keys)
        {
            Build(endpoint, messageType: null);
        }

        foreach (var messageType in _messageTypes.Keys)
        {
            Build(endpoint: null, messageType);
            foreach (var endpoint in _endpoints.Keys)
            {
                Build(endpoint, messageType);
            }
        }
    }

    private RetryPolicy Build(string? endpoint, Type? messageType)
    {
        lock (_gate)
        {
            var builder = new RetryPolicyBuilder();
            Apply(builder, _global);
            if (endpoint is not null && _endpoints.TryGetValue(endpoint, out var endpointActions))
            {
                Apply(builder, endpointActions);
            }

            if (messageType is not null && _messageTypes.TryGetValue(messageType, out var typeActions))
            {
                Apply(builder, typeActions);
            }

            var scope = (endpoint, messageType) switch
            {
                (null, null) => "The global retry policy",
                ({ } e, null) => $"The retry policy of endpoint '{e}'",
                (null, { } t) => $"The retry policy of message type '{t.Name}'",
                ({ } e, { } t) => $"The retry policy of message type '{t.Name}' at endpoint '{e}'",
            };
            return builder.Build(scope);
        }
    }

    private static void Apply(RetryPolicyBuilder builder, List<Action<RetryPolicyBuilder>> layer)
    {
        foreach (var configure in layer)
        {
            configure(builder);
        }
    }
}
