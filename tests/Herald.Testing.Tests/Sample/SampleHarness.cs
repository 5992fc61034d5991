using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests.Sample;

/// <summary>Starts the harness with the sample application's configuration, as its tests would.</summary>
public static class SampleHarness
{
    public static Task<HeraldTestHarness> StartAsync(CardGateway? gateway = null, Action<Herald.Hosting.HeraldBuilder>? more = null) =>
        HeraldTestHarness.StartAsync(h =>
        {
            OrderSagas.Configure(h);
            h.Services.AddSingleton(gateway ?? new CardGateway());
            more?.Invoke(h);
        });
}
