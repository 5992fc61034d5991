using Herald.Cqrs.Validation;
using Herald.Messages;
using Herald.Reliability.Retry;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Reliability;

public sealed class RetryPolicyTests
{
    private static readonly Exception Failure = new InvalidOperationException("boom");

    [Fact]
    public void MaxAttempts_IsOnePlusImmediatePlusDelayedRetries()
    {
        var policy = RetryPolicy.Create(r => r.Immediate(2).Delayed(3, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10)));

        Assert.Equal(6, policy.MaxAttempts);
        Assert.Equal(6, RetryPolicy.Default.MaxAttempts);
        Assert.Equal(1, RetryPolicy.None.MaxAttempts);
    }

    [Fact]
    public void Decide_RetriesImmediatelyThenRedeliversThenDeadLetters_AtExactlyMaxAttempts()
    {
        var policy = RetryPolicy.Create(r => r.Immediate(2).Delayed(3, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10)));
        var random = new Random(7);

        var actions = Enumerable.Range(1, policy.MaxAttempts).Select(attempt => policy.Decide(Failure, attempt, random).Action).ToList();

        Assert.Equal(
            [RetryAction.RetryImmediately, RetryAction.RetryImmediately, RetryAction.Redeliver, RetryAction.Redeliver, RetryAction.Redeliver, RetryAction.DeadLetter],
            actions);
        Assert.Equal(RetryAction.DeadLetter, policy.Decide(Failure, policy.MaxAttempts + 5, random).Action);
    }

    // docs/reliability.md "How attempts count" states these values.
    [Fact]
    public void Default_IsTwoImmediateAndThreeDelayedRetries_From1SecondTo1Minute_GrowingFourfold()
    {
        Assert.Equal(2, RetryPolicy.Default.ImmediateRetries);
        Assert.Equal(3, RetryPolicy.Default.DelayedRetries);
        Assert.Equal(TimeSpan.FromSeconds(1), RetryPolicy.Default.MinDelay);
        Assert.Equal(TimeSpan.FromMinutes(1), RetryPolicy.Default.MaxDelay);
        Assert.Equal(4, RetryPolicy.Default.Factor);
    }

    [Theory]
    [InlineData(typeof(MessageDeserializationException))]
    [InlineData(typeof(UnknownMessageTypeException))]
    [InlineData(typeof(ValidationException))]
    [InlineData(typeof(Herald.Sagas.SagaMessageRejectedException))]
    public void Decide_ForADefaultNeverRetriedException_DeadLettersOnTheFirstAttempt(Type exceptionType)
    {
        var exception = exceptionType == typeof(ValidationException)
            ? new ValidationException(typeof(string), [new ValidationError("Name", "is required")])
            : exceptionType == typeof(UnknownMessageTypeException)
                ? new UnknownMessageTypeException("who-knows")
                : exceptionType == typeof(Herald.Sagas.SagaMessageRejectedException)
                    ? new Herald.Sagas.SagaMessageRejectedException("no correlation id")
                    : (Exception)new MessageDeserializationException("x", null);

        Assert.True(RetryPolicy.Default.IsNeverRetried(exception));
        Assert.Equal(RetryDecision.DeadLetter, RetryPolicy.Default.Decide(exception, 1, new Random(1)));
    }

    [Fact]
    public void NeverRetry_CoversSubtypes_AndAllowRetryRemovesADefault()
    {
        var policy = RetryPolicy.Create(r => r.NeverRetry<ArgumentException>().AllowRetry<ValidationException>());

        Assert.True(policy.IsNeverRetried(new ArgumentNullException("x")));
        Assert.False(policy.IsNeverRetried(new ValidationException(typeof(string), [])));
        Assert.False(policy.IsNeverRetried(Failure));
    }

    [Fact]
    public void Delays_StayBetweenTheMinimumAndTheGrowingCeiling_AndAreSpreadByJitter()
    {
        var min = TimeSpan.FromSeconds(1);
        var max = TimeSpan.FromSeconds(20);
        var policy = RetryPolicy.Create(r => r.Immediate(0).Delayed(6, min, max, factor: 3));
        var random = new Random(12345);

        for (var k = 1; k <= 6; k++)
        {
            var ceiling = policy.GetDelayCeiling(k);
            Assert.Equal(TimeSpan.FromTicks(Math.Min(max.Ticks, (long)(min.Ticks * Math.Pow(3, k)))), ceiling);
            var delays = Enumerable.Range(0, 500).Select(_ => policy.GetDelay(k, random)).ToList();
            Assert.All(delays, d => Assert.InRange(d, min, ceiling));
            Assert.True(delays.Distinct().Count() > 100, $"full jitter spreads delayed retry {k}'s delays");
        }

        Assert.Equal(max, policy.GetDelayCeiling(100));
    }

    [Fact]
    public void Decide_RedeliversWithTheDelayOfItsDelayedRetryNumber()
    {
        var policy = RetryPolicy.Create(r => r.Immediate(1).Delayed(3, TimeSpan.FromSeconds(2), TimeSpan.FromMinutes(1), factor: 2));

        for (var seed = 0; seed < 200; seed++)
        {
            var decision = policy.Decide(Failure, attempt: 3, new Random(seed));
            Assert.Equal(RetryAction.Redeliver, decision.Action);
            Assert.InRange(decision.Delay, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(8));
        }
    }

    [Fact]
    public void Delay_WithEqualBounds_IsFixed()
    {
        var policy = RetryPolicy.Create(r => r.Delayed(3, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5)));

        Assert.All(Enumerable.Range(1, 3), k => Assert.Equal(TimeSpan.FromSeconds(5), policy.GetDelay(k, new Random(k))));
    }

    [Fact]
    public void Build_WithTheMinimumAboveTheMaximum_ThrowsNamingBoth()
    {
        var ex = Assert.Throws<InvalidRetryPolicyException>(() => RetryPolicy.Create(r => r.Delayed(3, TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(10))));

        Assert.Contains("MinDelay (00:05:00) must not be greater than MaxDelay (00:00:10)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Build_WithAMaxDelayPastWhatEveryTransportCanHold_ThrowsNamingTheLimit()
    {
        // Issue 10: a longer delay overflowed RabbitMQ's queue TTL (and timers) at the first delayed retry.
        var ex = Assert.Throws<InvalidRetryPolicyException>(() => RetryPolicy.Create(r => r.Delayed(3, TimeSpan.FromSeconds(1), TimeSpan.FromDays(30))));

        Assert.Contains("MaxDelay must be at most 24.20:31:23.647", ex.Message, StringComparison.Ordinal);
        RetryPolicy.Create(r => r.Delayed(3, TimeSpan.FromSeconds(1), TimeSpan.FromDays(24)));
    }

    [Fact]
    public void Build_WithAFactorBelowOne_ThrowsNamingTheFactor()
    {
        var ex = Assert.Throws<InvalidRetryPolicyException>(() => RetryPolicy.Create(r => r.Delayed(3, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10), factor: 0.5)));

        Assert.Contains("Factor must be a finite number of at least 1, not 0.5", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Build_WithNegativeCountsAndDelays_ListsEveryProblem()
    {
        var ex = Assert.Throws<InvalidRetryPolicyException>(() => RetryPolicy.Create(r =>
        {
            r.ImmediateRetries = -1;
            r.DelayedRetries = -2;
            r.MinDelay = TimeSpan.FromSeconds(-1);
        }));

        Assert.Equal(3, ex.Problems.Count);
        Assert.Contains(ex.Problems, p => p.StartsWith("ImmediateRetries must be between 0 and 100, not -1", StringComparison.Ordinal));
        Assert.Contains(ex.Problems, p => p.StartsWith("DelayedRetries must be between 0 and 10000, not -2", StringComparison.Ordinal));
        Assert.Contains(ex.Problems, p => p.StartsWith("MinDelay must not be negative", StringComparison.Ordinal));
    }

    [Fact]
    public void NeverRetry_OfATypeThatIsNotAnException_ThrowsNamingIt()
    {
        var ex = Assert.Throws<ArgumentException>(() => new RetryPolicyBuilder().NeverRetry(typeof(string)));

        Assert.Contains("System.String", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ToBuilder_DerivesAChangedCopy_LeavingTheOriginal()
    {
        var original = RetryPolicy.Create(r => r.Immediate(4));

        var changed = original.ToBuilder().Immediate(1).Build();

        Assert.Equal(4, original.ImmediateRetries);
        Assert.Equal(1, changed.ImmediateRetries);
        Assert.Equal(original.NeverRetried, changed.NeverRetried);
    }

    [Fact]
    public void ConfigureRetries_WithImpossibleBounds_ThrowsAtConfigurationTime()
    {
        var services = new ServiceCollection();

        var ex = Assert.Throws<InvalidRetryPolicyException>(() =>
            services.AddHerald(h => h.ConfigureRetries(r => r.Delayed(3, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(1)))));

        Assert.StartsWith("The global retry policy is invalid: MinDelay", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ConfigureRetries_ForAMessageType_NamesTheTypeWhenImpossible_AndKeepsTheEarlierConfiguration()
    {
        var services = new ServiceCollection();
        services.AddHerald(h => h.ConfigureRetries<Order>(r => r.Immediate(3)));

        var ex = Assert.Throws<InvalidRetryPolicyException>(() => services.AddHerald(h => h.ConfigureRetries<Order>(r => r.Immediate(-1))));

        Assert.Contains("message type 'Order'", ex.Message, StringComparison.Ordinal);
        using var provider = services.BuildServiceProvider();
        Assert.Equal(3, provider.GetRequiredService<RetryPolicies>().Get("any", typeof(Order)).ImmediateRetries);
    }

    [Fact]
    public void Policies_LayerGlobalThenEndpointThenMessageType_WhateverTheOrderOfTheCalls()
    {
        var policies = new RetryPolicies();
        policies.ConfigureMessageType(typeof(Order), r => r.Immediate(5));
        policies.ConfigureEndpoint("billing", r => r.Immediate(4).Delayed(1, TimeSpan.Zero, TimeSpan.FromSeconds(1)));
        policies.ConfigureGlobal(r => r.Immediate(1).Delayed(7, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2)));

        var plain = policies.Get("orders", typeof(string));
        var atBilling = policies.Get("billing", typeof(string));
        var order = policies.Get("orders", typeof(Order));
        var orderAtBilling = policies.Get("billing", typeof(Order));

        Assert.Equal((1, 7), (plain.ImmediateRetries, plain.DelayedRetries));
        Assert.Equal((4, 1), (atBilling.ImmediateRetries, atBilling.DelayedRetries));
        Assert.Equal((5, 7), (order.ImmediateRetries, order.DelayedRetries));
        Assert.Equal((5, 1), (orderAtBilling.ImmediateRetries, orderAtBilling.DelayedRetries));
    }

    private sealed record Order(int Id);
}
