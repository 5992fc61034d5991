using System.Reflection;
using StackExchange.Redis;

namespace Herald.Redis.Tests.Faults;

/// <summary>A multiplexer whose databases run the next script on the server, then fail it as a dropped connection would.</summary>
public class LostReplies : DispatchProxy
{
    private object _target = null!;
    private LostReplies _owner = null!;

    public bool LoseNextReply { get; set; }

    public IConnectionMultiplexer Multiplexer { get; private set; } = null!;

    public static LostReplies Wrap(IConnectionMultiplexer multiplexer)
    {
        var proxy = Create<IConnectionMultiplexer, LostReplies>();
        var self = (LostReplies)(object)proxy;
        self._target = multiplexer;
        self._owner = self;
        self.Multiplexer = proxy;
        return self;
    }

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        var result = targetMethod!.Invoke(_target, args);
        if (result is IDatabase database)
        {
            var proxy = Create<IDatabase, LostReplies>();
            var wrapper = (LostReplies)(object)proxy;
            wrapper._target = database;
            wrapper._owner = _owner;
            return proxy;
        }

        if (targetMethod.Name == nameof(IDatabase.ScriptEvaluateAsync) && _owner.LoseNextReply)
        {
            _owner.LoseNextReply = false;
            return LoseAsync((Task<RedisResult>)result!);
        }

        return result;
    }

    private static async Task<RedisResult> LoseAsync(Task<RedisResult> applied)
    {
        await applied;
        throw new RedisConnectionException(ConnectionFailureType.SocketClosed, "The connection dropped before the reply.");
    }
}
