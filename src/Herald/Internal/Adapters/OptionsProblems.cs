using Microsoft.Extensions.Options;

namespace Herald.Internal;

/// <summary>
/// The problems found in one options object, each message starting with the setting it names
/// (<c>SqliteStoreOptions.BusyTimeout is -00:00:01; it must be between zero and one day.</c>), so a start fails listing every
/// wrong setting at once instead of the first.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class OptionsProblems
{
    private readonly List<(string Setting, string Message)> _problems = [];

    /// <summary>Starts an empty list for options of <paramref name="optionsType"/>, named by <paramref name="optionsName"/> (its type name by default).</summary>
    public OptionsProblems(Type optionsType, string? optionsName = null)
    {
        ArgumentNullException.ThrowIfNull(optionsType);
        OptionsType = optionsType;
        OptionsName = optionsName ?? optionsType.Name;
    }

    /// <summary>The options type the problems belong to.</summary>
    public Type OptionsType { get; }

    /// <summary>The name each message starts with.</summary>
    public string OptionsName { get; }

    /// <summary>How many problems were found.</summary>
    public int Count => _problems.Count;

    /// <summary>The messages, in the order found.</summary>
    public IReadOnlyList<string> Messages => [.. _problems.Select(p => p.Message)];

    /// <summary>Adds a problem of <paramref name="setting"/>; the message is "<c>Options.Setting</c> <paramref name="problem"/>".</summary>
    public void Add(string setting, string problem) => _problems.Add((setting, $"{OptionsName}.{setting} {problem}"));

    /// <summary>Adds messages that already name their setting (options that list their own problems).</summary>
    public void AddMessages(IEnumerable<string> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        foreach (var message in messages)
        {
            _problems.Add((string.Empty, message));
        }
    }

    /// <summary>Adds a problem unless <paramref name="value"/> is at least <paramref name="minimum"/>.</summary>
    public void AtLeast(string setting, long value, long minimum)
    {
        if (value < minimum)
        {
            Add(setting, $"is {value}; it must be at least {minimum}.");
        }
    }

    /// <summary>Adds a problem unless <paramref name="value"/> lies between <paramref name="minimum"/> and <paramref name="maximum"/> (both included).</summary>
    public void Between(string setting, long value, long minimum, long maximum, string? range = null)
    {
        if (value < minimum || value > maximum)
        {
            Add(setting, $"is {value}; it must be between {range ?? $"{minimum} and {maximum}"}.");
        }
    }

    /// <summary>
    /// Adds a problem unless <paramref name="value"/> lies between <paramref name="minimum"/> and <paramref name="maximum"/>
    /// (both included); <paramref name="range"/> says the range in words ("100 ms and one day").
    /// </summary>
    public void Between(string setting, TimeSpan value, TimeSpan minimum, TimeSpan maximum, string range)
    {
        if (value < minimum || value > maximum)
        {
            Add(setting, $"is {value}; it must be between {range}.");
        }
    }

    /// <summary>Adds a problem unless <paramref name="value"/> is above zero.</summary>
    public void Positive(string setting, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            Add(setting, $"is {value}; it must be positive.");
        }
    }

    /// <summary>Adds a problem when <paramref name="value"/> is below zero.</summary>
    public void NotNegative(string setting, TimeSpan value)
    {
        if (value < TimeSpan.Zero)
        {
            Add(setting, $"is {value}; it must not be negative.");
        }
    }

    /// <summary>
    /// Adds a problem when <paramref name="value"/> is longer than a timer, <c>Task.Delay</c> or <c>CancelAfter</c> can wait
    /// (<see cref="Hosting.OptionLimits.LongestWait"/>, about 24.8 days): a longer one passed the start and threw where it was waited on.
    /// </summary>
    public void AtMostLongestWait(string setting, TimeSpan value)
    {
        if (Hosting.OptionLimits.TooLongWait(value) is { } problem)
        {
            Add(setting, problem);
        }
    }

    /// <summary>
    /// Adds a problem when <paramref name="value"/>, added to or taken from the time of day, is longer than 100 years
    /// (<see cref="Hosting.OptionLimits.LongestSpan"/>): a longer one passed the start and threw where the date was computed.
    /// </summary>
    public void AtMostLongestSpan(string setting, TimeSpan value)
    {
        if (Hosting.OptionLimits.TooLongSpan(value) is { } problem)
        {
            Add(setting, problem);
        }
    }

    /// <summary>Checks <paramref name="options"/> with <paramref name="check"/> and returns the problems it found.</summary>
    public static OptionsProblems Of<TOptions>(TOptions options, Action<TOptions, OptionsProblems> check)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(check);
        var problems = new OptionsProblems(typeof(TOptions));
        check(options, problems);
        return problems;
    }

    /// <summary>Throws an <see cref="OptionsValidationException"/> listing every problem, if there is any.</summary>
    public void ThrowIfAny()
    {
        if (_problems.Count > 0)
        {
            throw new OptionsValidationException(Options.DefaultName, OptionsType, Messages);
        }
    }

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for the first problem, its parameter name the setting, if there is any (for
    /// factories whose callers pass the options as an argument).
    /// </summary>
    public void ThrowFirstAsArgumentException()
    {
        if (_problems.Count > 0)
        {
            var (setting, message) = _problems[0];
            throw new ArgumentException(message, string.IsNullOrEmpty(setting) ? null : setting);
        }
    }

    /// <summary>The result an <see cref="IValidateOptions{TOptions}"/> returns for these problems.</summary>
    public ValidateOptionsResult ToResult() => _problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(Messages);
}
