using Herald.EventSourcing;
using Herald.Sagas;
using Microsoft.AspNetCore.Http;

namespace Herald.AspNetCore;

/// <summary>Settings of Herald's HTTP glue, set with <c>services.AddHeraldAspNetCore(o => ...)</c>.</summary>
public sealed class HeraldHttpOptions
{
    private readonly Dictionary<Type, ExceptionMapping> _mappings = new()
    {
        [typeof(ConcurrencyException)] = new(StatusCodes.Status409Conflict, "Conflict", ExposeMessage: false),
        [typeof(SagaConcurrencyException)] = new(StatusCodes.Status409Conflict, "Conflict", ExposeMessage: false),
        [typeof(StreamDeletedDuringReadException)] = new(StatusCodes.Status409Conflict, "Conflict", ExposeMessage: false),
    };

    /// <summary>
    /// Largest request body, in bytes, that endpoints guarded with <c>AcceptsJson</c> or <c>WithIdempotencyKey</c> read;
    /// a larger one is answered 413. Default 1 MiB.
    /// </summary>
    public long MaxRequestBodyBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// Answers <typeparamref name="TException"/> (and the types derived from it) with a problem of this status, titled
    /// <paramref name="title"/> and detailed with the exception's message, which is meant for the client (a domain rule
    /// broken: 422). The most derived mapping wins; a later call replaces an earlier one.
    /// </summary>
    public HeraldHttpOptions MapException<TException>(int status, string? title = null)
        where TException : Exception
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(status, 400);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(status, 599);
        _mappings[typeof(TException)] = new ExceptionMapping(status, title, ExposeMessage: true);
        return this;
    }

    /// <summary>The mapping of the exception's type or its nearest mapped base type, or null.</summary>
    internal ExceptionMapping? Find(Type exceptionType)
    {
        for (var type = exceptionType; type is not null && type != typeof(object); type = type.BaseType)
        {
            if (_mappings.TryGetValue(type, out var mapping))
            {
                return mapping;
            }
        }

        return null;
    }

    internal IEnumerable<string> Validate()
    {
        if (MaxRequestBodyBytes <= 0)
        {
            yield return $"HeraldHttpOptions.MaxRequestBodyBytes must be positive, not {MaxRequestBodyBytes}.";
        }
    }
}

/// <summary>How an exception type is answered: its status, title, and whether its message is shown to the client.</summary>
internal sealed record ExceptionMapping(int Status, string? Title, bool ExposeMessage);
