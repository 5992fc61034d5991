using System.Runtime.CompilerServices;
using Herald.Reliability.DeadLetters;

namespace Herald.Tests.Reliability;

public sealed class ExceptionFingerprintTests
{
    [Fact]
    public async Task SameThrowSite_WithDifferentMessages_HasOneFingerprint()
    {
        var first = await CatchAsync(() => ThrowFromStockAsync("order 1"));
        var second = await CatchAsync(() => ThrowFromStockAsync("order 2"));

        Assert.Equal(ExceptionFingerprint.Compute(first), ExceptionFingerprint.Compute(second));
        Assert.Matches("^[0-9a-f]{32}$", ExceptionFingerprint.Compute(first));
    }

    [Fact]
    public async Task DifferentThrowSites_HaveDifferentFingerprints()
    {
        var stock = await CatchAsync(() => ThrowFromStockAsync("x"));
        var billing = await CatchAsync(() => ThrowFromBillingAsync("x"));

        Assert.NotEqual(ExceptionFingerprint.Compute(stock), ExceptionFingerprint.Compute(billing));
    }

    [Fact]
    public void DifferentExceptionTypes_FromOneSite_HaveDifferentFingerprints()
    {
        var invalid = Catch(() => Throw(new InvalidOperationException("x")));
        var argument = Catch(() => Throw(new ArgumentException("x")));

        Assert.NotEqual(ExceptionFingerprint.Compute(invalid), ExceptionFingerprint.Compute(argument));
    }

    [Fact]
    public async Task Frames_NameAsyncMethodsAndLambdas_WithoutCompilerGeneratedNumbers()
    {
        var exception = await CatchAsync(() => ThrowFromStockAsync("x"));

        var frames = ExceptionFingerprint.TopFrames(exception);

        Assert.Equal(
            [typeof(ExceptionFingerprintTests).FullName + ".ThrowFromStockAsync", typeof(ExceptionFingerprintTests).FullName + ".CatchAsync"],
            frames);
    }

    [Fact]
    public async Task Frames_NameAnAsyncLambdaAfterTheMethodThatHoldsIt()
    {
        var exception = await CatchAsync(async () =>
        {
            await Task.Yield();
            throw new InvalidOperationException("from a lambda");
        });

        var frames = ExceptionFingerprint.TopFrames(exception);

        Assert.Equal(typeof(ExceptionFingerprintTests).FullName + "." + nameof(Frames_NameAnAsyncLambdaAfterTheMethodThatHoldsIt) + "+lambda", frames[0]);
        Assert.All(frames, f => Assert.DoesNotContain("MoveNext", f, StringComparison.Ordinal));
        Assert.All(frames, f => Assert.DoesNotContain("__", f, StringComparison.Ordinal));
    }

    [Fact]
    public void AnExceptionNeverThrown_IsFingerprintedByItsTypeAlone()
    {
        var exception = new InvalidOperationException("created, not thrown");

        Assert.Empty(ExceptionFingerprint.TopFrames(exception));
        Assert.Equal(ExceptionFingerprint.Compute(typeof(InvalidOperationException).FullName!, []), ExceptionFingerprint.Compute(exception));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task ThrowFromStockAsync(string message)
    {
        await Task.Yield();
        throw new InvalidOperationException(message);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task ThrowFromBillingAsync(string message)
    {
        await Task.Yield();
        throw new InvalidOperationException(message);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Throw(Exception exception) => throw exception;

    private static async Task<Exception> CatchAsync(Func<Task> action)
    {
        try
        {
            await action();
        }
        catch (Exception ex)
        {
            return ex;
        }

        throw new InvalidOperationException("nothing was thrown");
    }

    private static Exception Catch(Action action)
    {
        try
        {
            action();
        }
        catch (Exception ex)
        {
            return ex;
        }

        throw new InvalidOperationException("nothing was thrown");
    }
}
