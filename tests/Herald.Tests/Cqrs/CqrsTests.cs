using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.Tests.Cqrs.Scanned;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Cqrs;

public sealed class CqrsTests
{
    [Fact]
    public async Task Send_CommandWithResult_ReturnsTheHandlersResult()
    {
        using var provider = Build(h => h.AddHandler<CreateHandler>());
        var id = await provider.GetRequiredService<ICommandBus>().SendAsync(new Create("widget"));
        Assert.Equal("created:widget", id);
    }

    [Fact]
    public async Task Send_CommandWithoutResult_RunsTheHandler()
    {
        var log = new List<string>();
        using var provider = Build(h => h.AddHandler<RenameHandler>(), log);
        await provider.GetRequiredService<ICommandBus>().SendAsync(new Rename("b"));
        Assert.Equal(["rename:b"], log);
    }

    [Fact]
    public async Task Query_ReturnsTypedResult()
    {
        using var provider = Build(h => h.AddHandler<CountHandler>());
        var count = await provider.GetRequiredService<IQueryBus>().QueryAsync(new CountWidgets("x"));
        Assert.Equal(1, count);
    }

    [Fact]
    public async Task Send_CommandWithoutHandler_ThrowsNamingTheCommand()
    {
        using var provider = Build(_ => { });
        var ex = await Assert.ThrowsAsync<HandlerNotFoundException>(async () => await provider.GetRequiredService<ICommandBus>().SendAsync(new Rename("a")));
        Assert.Contains(nameof(Rename), ex.Message, StringComparison.Ordinal);
        Assert.Contains("ICommandHandler<Rename>", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AddHandler_SecondHandlerForOneCommand_ThrowsNamingBoth()
    {
        var services = new ServiceCollection();
        var ex = Assert.Throws<DuplicateHandlerException>(() => services.AddHerald(h => h.AddHandler<CreateHandler>().AddHandler<OtherCreateHandler>()));
        Assert.Contains(nameof(Create), ex.Message, StringComparison.Ordinal);
        Assert.Contains(nameof(CreateHandler), ex.Message, StringComparison.Ordinal);
        Assert.Contains(nameof(OtherCreateHandler), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AddHandler_SameHandlerTwice_IsOneRegistration()
    {
        var services = new ServiceCollection();
        services.AddHerald(h => h.AddHandler<CreateHandler>().AddHandler<CreateHandler>());
        Assert.Single(services, d => d.ServiceType == typeof(ICommandHandler<Create, string>));
    }

    [Fact]
    public async Task Send_HandlerRegisteredTwiceBehindHeraldsBack_ThrowsAtDispatch()
    {
        var services = new ServiceCollection();
        services.AddHerald(h => h.AddHandler<CreateHandler>());
        services.AddScoped<ICommandHandler<Create, string>, OtherCreateHandler>();
        using var provider = services.BuildServiceProvider();

        await Assert.ThrowsAsync<DuplicateHandlerException>(async () => await provider.GetRequiredService<ICommandBus>().SendAsync(new Create("a")));
    }

    [Fact]
    public async Task Validation_ListsEveryErrorAndTheHandlerDoesNotRun()
    {
        var log = new List<string>();
        using var provider = Build(h => h.AddHandler<RenameHandler>().AddValidator<RenameValidator>().AddValidator<RenameLengthValidator>(), log);

        var ex = await Assert.ThrowsAsync<ValidationException>(async () => await provider.GetRequiredService<ICommandBus>().SendAsync(new Rename("")));

        Assert.Equal(2, ex.Errors.Count);
        Assert.All(ex.Errors, e => Assert.Equal("Name", e.Property));
        Assert.Contains("must not be empty", ex.Message, StringComparison.Ordinal);
        Assert.Empty(log);
    }

    [Fact]
    public async Task Behaviors_RunInRegistrationOrderAroundTheHandler()
    {
        var log = new List<string>();
        using var provider = Build(h => h.AddHandler<RenameHandler>().AddPipelineBehavior(typeof(LoggingBehavior<,>)).AddPipelineBehavior(typeof(RenameOnlyBehavior)), log);

        await provider.GetRequiredService<ICommandBus>().SendAsync(new Rename("c"));

        Assert.Equal(["before:Rename", "rename-only", "rename:c", "after:Rename"], log);
    }

    [Fact]
    public async Task Scanning_FindsHandlersAndValidators()
    {
        var services = new ServiceCollection();
        services.AddSingleton(new List<string>());
        services.AddHerald(h => h.AddHandlersFromAssembly(typeof(ScannedCommand).Assembly, filter: t => t.Namespace == typeof(ScannedCommand).Namespace));
        using var provider = services.BuildServiceProvider();

        Assert.Equal(5, await provider.GetRequiredService<ICommandBus>().SendAsync(new ScannedCommand(5)));
        await Assert.ThrowsAsync<ValidationException>(async () => await provider.GetRequiredService<ICommandBus>().SendAsync(new ScannedCommand(-1)));
    }

    [Fact]
    public async Task ATypeThatIsACommandAndACommandWithAResult_IsRefusedByAddHandlerAndTheBus_NamingBothKinds()
    {
        // The bus cached one invoker per request type: sent as the other kind, it got the first one's invoker, cast to the
        // wrong result type (InvalidCastException); and AddHandler kept only one kind of a handler implementing both.
        var services = new ServiceCollection();
        var refused = Assert.Throws<HeraldException>(() => services.AddHerald(h => h.AddHandler<ArchiveHandler>()));
        Assert.Contains("ICommand and ICommand<Int32>", refused.Message, StringComparison.Ordinal);

        using var provider = Build(_ => { });
        var commands = provider.GetRequiredService<ICommandBus>();
        foreach (var send in new Func<ValueTask>[] { () => commands.SendAsync((ICommand)new Archive("a")), async () => await commands.SendAsync<int>(new Archive("b")) })
        {
            var error = await Assert.ThrowsAsync<HeraldException>(async () => await send());
            Assert.Contains(nameof(Archive), error.Message, StringComparison.Ordinal);
            Assert.Contains("ICommand and ICommand<Int32>", error.Message, StringComparison.Ordinal);
        }
    }

    public sealed record Archive(string Name) : ICommand, ICommand<int>;

    public sealed class ArchiveHandler : ICommandHandler<Archive>, ICommandHandler<Archive, int>
    {
        public ValueTask HandleAsync(Archive command, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        ValueTask<int> ICommandHandler<Archive, int>.HandleAsync(Archive command, CancellationToken cancellationToken) => ValueTask.FromResult(1);
    }

    private static ServiceProvider Build(Action<Herald.Hosting.HeraldBuilder> configure, List<string>? log = null)
    {
        var services = new ServiceCollection();
        services.AddSingleton(log ?? []);
        services.AddHerald(configure);
        return services.BuildServiceProvider(new ServiceProviderOptions { ValidateScopes = true, ValidateOnBuild = true });
    }

    public sealed record Create(string Name) : ICommand<string>;

    public sealed record Rename(string Name) : ICommand;

    public sealed record CountWidgets(string Prefix) : IQuery<int>;

    public sealed class CreateHandler : ICommandHandler<Create, string>
    {
        public ValueTask<string> HandleAsync(Create command, CancellationToken cancellationToken) => ValueTask.FromResult("created:" + command.Name);
    }

    public sealed class OtherCreateHandler : ICommandHandler<Create, string>
    {
        public ValueTask<string> HandleAsync(Create command, CancellationToken cancellationToken) => ValueTask.FromResult("other");
    }

    public sealed class RenameHandler(List<string> log) : ICommandHandler<Rename>
    {
        public ValueTask HandleAsync(Rename command, CancellationToken cancellationToken)
        {
            log.Add("rename:" + command.Name);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class CountHandler : IQueryHandler<CountWidgets, int>
    {
        public ValueTask<int> HandleAsync(CountWidgets query, CancellationToken cancellationToken) => ValueTask.FromResult(query.Prefix.Length);
    }

    public sealed class RenameValidator : IValidator<Rename>
    {
        public IEnumerable<ValidationError> Validate(Rename instance)
        {
            if (string.IsNullOrEmpty(instance.Name))
            {
                yield return new ValidationError(nameof(Rename.Name), "must not be empty");
            }
        }
    }

    public sealed class RenameLengthValidator : IValidator<Rename>
    {
        public IEnumerable<ValidationError> Validate(Rename instance)
        {
            if (instance.Name.Length < 2)
            {
                yield return new ValidationError(nameof(Rename.Name), "must have at least 2 characters");
            }
        }
    }

    public sealed class LoggingBehavior<TRequest, TResult>(List<string> log) : IPipelineBehavior<TRequest, TResult>
        where TRequest : notnull
    {
        public async ValueTask<TResult> HandleAsync(TRequest request, RequestHandlerDelegate<TResult> next, CancellationToken cancellationToken)
        {
            log.Add("before:" + typeof(TRequest).Name);
            var result = await next();
            log.Add("after:" + typeof(TRequest).Name);
            return result;
        }
    }

    public sealed class RenameOnlyBehavior(List<string> log) : IPipelineBehavior<Rename, Unit>
    {
        public ValueTask<Unit> HandleAsync(Rename request, RequestHandlerDelegate<Unit> next, CancellationToken cancellationToken)
        {
            log.Add("rename-only");
            return next();
        }
    }
}
