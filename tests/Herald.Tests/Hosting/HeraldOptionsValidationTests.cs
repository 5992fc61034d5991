using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Herald.Tests.Hosting;

/// <summary>A bad <see cref="HeraldOptions"/> fails the start naming the options type, the setting and where it is set.</summary>
public sealed class HeraldOptionsValidationTests
{
    // The messages said "EndpointName must not be empty." alone: nothing named HeraldOptions or h.Configure, and the
    // exception surfaced from whichever service read the options first.
    [Fact]
    public async Task EveryBadSetting_FailsTheStart_NamingHeraldOptionsTheSettingAndWhereToSetIt()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.Configure(o =>
        {
            o.EndpointName = " ";
            o.MaxConcurrency = 0;
            o.Prefetch = 0;
        }));
        using var host = builder.Build();

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains("HeraldOptions.EndpointName must not be empty", error.Message, StringComparison.Ordinal);
        Assert.Contains("h.Configure(o => o.EndpointName = \"orders\")", error.Message, StringComparison.Ordinal);
        Assert.Contains("HeraldOptions.MaxConcurrency must be at least 1, not 0", error.Message, StringComparison.Ordinal);
        Assert.Contains("HeraldOptions.Prefetch must be at least 1, not 0", error.Message, StringComparison.Ordinal);
    }
}
