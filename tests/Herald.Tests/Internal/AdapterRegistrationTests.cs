using Herald.Internal;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Herald.Tests.Internal;

/// <summary>The adapters' shared registration (issue 9): options checked listing every problem, components started once with the host.</summary>
public sealed class AdapterRegistrationTests
{
    [Fact]
    public void CheckedOptions_ListEveryProblem_EachNamingItsSetting()
    {
        var services = new ServiceCollection();
        services.AddCheckedOptions<SampleOptions>(o => o.Size = 0, SampleOptions.Check);
        services.AddCheckedOptions<SampleOptions>(null, SampleOptions.Check);
        using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<SampleOptions>>().Value);

        Assert.Equal(
            ["SampleOptions.Size is 0; it must be at least 1.", "SampleOptions.Delay is -00:00:01; it must be positive."],
            error.Failures);
        Assert.Single(provider.GetServices<IValidateOptions<SampleOptions>>());
    }

    [Fact]
    public void ThrowFirstAsArgumentException_NamesTheSettingAsTheParameter()
    {
        var problems = new OptionsProblems(typeof(SampleOptions));
        SampleOptions.Check(new SampleOptions { Size = 0 }, problems);

        var error = Assert.Throws<ArgumentException>(problems.ThrowFirstAsArgumentException);

        Assert.Equal("Size", error.ParamName);
        Assert.StartsWith("SampleOptions.Size is 0", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StartWithHost_StartsTheComponentOnce_FirstWhenAsked()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IHostedService, OtherHostedService>();
        var component = new Component();
        services.AddSingleton(component);
        services.StartWithHost<Component, Component>((c, _) => c.StartAsync(), beforeOtherHostedServices: true);
        services.StartWithHost<Component, Component>((c, _) => c.StartAsync(), beforeOtherHostedServices: true);
        using var provider = services.BuildServiceProvider();

        var hosted = provider.GetServices<IHostedService>().ToList();
        foreach (var service in hosted)
        {
            await service.StartAsync(CancellationToken.None);
        }

        Assert.Equal(2, hosted.Count);
        Assert.IsNotType<OtherHostedService>(hosted[0]);
        Assert.Equal(1, component.Starts);
    }

    [Fact]
    public async Task StartWithHost_WhenTheServiceWasReplacedByAnotherKind_StartsNothing()
    {
        var services = new ServiceCollection();
        var component = new Component();
        services.AddSingleton<IComponent>(component);
        services.StartWithHost<IComponent, Component>((c, _) => c.StartAsync());
        services.AddSingleton<IComponent, OtherComponent>();
        await using var provider = services.BuildServiceProvider();

        foreach (var service in provider.GetServices<IHostedService>())
        {
            await service.StartAsync(CancellationToken.None);
        }

        Assert.Equal(0, component.Starts);
    }

    private sealed class SampleOptions
    {
        public int Size { get; set; } = 1;

        public TimeSpan Delay { get; set; } = TimeSpan.FromSeconds(-1);

        public static void Check(SampleOptions options, OptionsProblems problems)
        {
            problems.AtLeast(nameof(Size), options.Size, 1);
            problems.Positive(nameof(Delay), options.Delay);
        }
    }

    private interface IComponent;

    private sealed class OtherComponent : IComponent;

    private sealed class Component : IComponent
    {
        public int Starts { get; private set; }

        public Task StartAsync()
        {
            Starts++;
            return Task.CompletedTask;
        }
    }

    private sealed class OtherHostedService : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
