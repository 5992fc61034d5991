using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Benchmarks.InProcess;

/// <summary>Every contender's host is built the same way: no configuration sources, warnings and errors to the console.</summary>
internal static class Hosts
{
    public static HostApplicationBuilder CreateBuilder()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = Environments.Production });
        builder.Logging.ClearProviders().AddSimpleConsole().SetMinimumLevel(LogLevel.Warning);
        return builder;
    }
}
