using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Herald.AspNetCore;
using Herald.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Herald.AspNetCore.Tests;

/// <summary>A tiny application on the in-process test server: Herald on its in-memory stores, the HTTP glue, and the test's endpoints.</summary>
internal sealed class TestApp : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TestApp(WebApplication app, HttpClient client)
    {
        _app = app;
        Client = client;
    }

    public HttpClient Client { get; }

    public IServiceProvider Services => _app.Services;

    public static async Task<TestApp> StartAsync(
        Action<WebApplication> map,
        Action<HeraldBuilder>? herald = null,
        Action<IServiceCollection>? services = null,
        Action<HeraldHttpOptions>? http = null,
        bool kestrel = false,
        string? applicationName = null,
        Action<IServiceCollection>? servicesAfterHerald = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Production", ApplicationName = applicationName });
        if (kestrel)
        {
            // A real server on a free loopback port: its own body size limit and its pipe-based response body.
            builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        }
        else
        {
            builder.WebHost.UseTestServer();
        }

        builder.Logging.ClearProviders();
        services?.Invoke(builder.Services);
        builder.Services.AddSingleton<Observed>();
        builder.Services.AddHerald(h =>
        {
            h.AddMessageType<OrderPlaced>().AddMessageType<OrderNoted>().AddAggregate<Order>().AddHandler<OrderCommands>().AddHandler<NotedHandler>()
                .AddValidator<PlaceOrderValidator>();
            herald?.Invoke(h);
        });
        builder.Services.AddHeraldAspNetCore(http);
        servicesAfterHerald?.Invoke(builder.Services);
        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.UseHeraldCorrelation();
        map(app);
        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }

        if (!kestrel)
        {
            return new TestApp(app, app.GetTestClient());
        }

        var address = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses.Single();
        return new TestApp(app, new HttpClient { BaseAddress = new Uri(address) });
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

internal static class Http
{
    public static async Task<JsonElement> ProblemAsync(this HttpResponseMessage response)
    {
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    public static HttpRequestMessage Json(HttpMethod method, string uri, string json, string? key = null, string? correlationId = null)
    {
        var request = new HttpRequestMessage(method, uri) { Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json") };
        if (key is not null)
        {
            request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
        }

        if (correlationId is not null)
        {
            request.Headers.TryAddWithoutValidation("X-Correlation-Id", correlationId);
        }

        return request;
    }
}
