using Herald.EventSourcing;
using Herald.Hosting;
using System.Text.Json.Serialization;
using Herald.Sagas;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using Orders.Api;
using Orders.Domain;
using Orders.Fulfilment;
using Orders.ReadModel;
using Orders.Stats;

namespace Orders;

/// <summary>
/// Builds the order service: Herald on the configured profile, the fulfilment saga, the read-model projection, the
/// "orders per status per minute" stream, the HTTP API and telemetry. The tests build it too (with their own arguments),
/// so what they run is what users run.
/// </summary>
public static class OrderServiceApp
{
    public const string DefaultUrl = "http://127.0.0.1:5080";

    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? customize = null)
    {
        // The application's name scopes its Idempotency-Keys in the shared stores: pinned, so the service keeps replaying its
        // stored responses whichever process hosts it (its own Orders.dll, a test host, a wrapper), not the entry assembly's.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = args,
            ApplicationName = typeof(OrderServiceApp).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
        });
        var settings = OrderServiceSettings.From(builder.Configuration);
        var demo = builder.Configuration["demo"] is not null;
        if (builder.Configuration["urls"] is null && builder.Configuration["ASPNETCORE_URLS"] is null)
        {
            // The demo talks to itself on a free port, so it runs beside a service already on 5080.
            builder.WebHost.UseUrls(demo ? "http://127.0.0.1:0" : DefaultUrl);
        }

        builder.Logging.ClearProviders().AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        });
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddFilter("Npgsql", LogLevel.Warning);
        builder.Logging.AddFilter("Herald", demo ? LogLevel.Error : LogLevel.Warning);
        // A declined payment is the saga's business (it compensates); the sample logs the outcome itself.
        builder.Logging.AddFilter("Herald.Sagas", LogLevel.Error);
        builder.Logging.AddFilter("Orders", demo ? LogLevel.Warning : LogLevel.Information);

        builder.Services.AddSingleton(settings);
        AddHerald(builder.Services, settings);
        builder.Services.AddHostedService<CatalogSeeder>();
        builder.Services.AddSingleton<Inventory>();
        builder.Services.AddSingleton<Payments>();
        builder.Services.AddSingleton<Shipping>();
        builder.Services.AddHeraldAspNetCore(o => o
            .MapException<OrderRuleException>(StatusCodes.Status422UnprocessableEntity, "Order rule broken")
            .MapException<OrderNotFoundException>(StatusCodes.Status404NotFound, "Order not found")
            .MapException<IdempotencyKeyReusedException>(StatusCodes.Status422UnprocessableEntity, "The Idempotency-Key was already used for another request."));
        // A body naming a property twice is ambiguous (a proxy reading the first "customerId" and this service the last
        // would disagree on whose order it is): refused with 400 instead of read last-wins.
        // A number sent as a string ("quantity": "3") is refused too: the web defaults read it, so a client whose numbers
        // went out as strings (a form serializer, a template) never learnt of it. And a property the request does not have
        // is refused naming it, not dropped: a misspelt optional field ("reasn") would otherwise be answered 202 as if absent.
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.AllowDuplicateProperties = false;
            o.SerializerOptions.NumberHandling = JsonNumberHandling.Strict;
            o.SerializerOptions.UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow;
        });
        builder.Services.AddKeyedSingleton(OrderEndpoints.ReadModelWaitClock, (sp, _) => sp.GetRequiredService<TimeProvider>());
        builder.Services.AddHealthChecks().AddHerald();
        AddTelemetry(builder, settings);
        customize?.Invoke(builder);

        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.UseHeraldCorrelation();
        app.MapOrderEndpoints();
        app.MapStatsEndpoints();
        app.MapHeraldHealth("/health");
        return app;
    }

    private static void AddHerald(IServiceCollection services, OrderServiceSettings settings)
    {
        services.AddHerald(h =>
        {
            h.AddHandlersFromAssembly(typeof(PlaceOrder).Assembly)
                .AddAggregate<Order>()
                .PublishStoredEvents()
                .UseInbox()
                .AddProjection<OrderProjection>()
                .AddSaga(FulfilmentSaga.Definition)
                .AddOrderStatusStream()
                .Configure(o =>
                {
                    o.EndpointName = settings.Endpoint;
                    // Handlers are short (a saga runs on Herald's saga runner once its start commits); a few at once share group commits.
                    o.MaxConcurrency = 8;
                })
                .ConfigureProjections(o => o.StatusInterval = TimeSpan.FromSeconds(1))
                // The steps take milliseconds: an instance without a save for 15 s has lost its runner (a killed
                // instance), and another instance's sweep takes it over.
                .ConfigureSagas(o =>
                {
                    o.ResumeInterval = TimeSpan.FromSeconds(5);
                    o.StaleAfter = TimeSpan.FromSeconds(15);
                })
                .ConfigureRetries(r => r.Immediate(2).Delayed(3, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(2)));
            if (settings.Profile == OrderServiceSettings.Embedded)
            {
                h.UseSqlite(settings.SqlitePath).UseSqliteQueue(settings.SqlitePath).UseSqliteStreamState();
                services.AddSingleton<Ledger>(new SqliteLedger(settings.SqlitePath));
            }
            else
            {
                h.UsePostgres(settings.Postgres!, o => o.Schema = settings.Schema)
                    .UsePostgresStreamState()
                    .UseRabbitMq(o =>
                    {
                        o.ConnectionUri = settings.RabbitMq!;
                        o.ClientProvidedName = "orders-sample";
                    });
                if (settings.Redis is { } redis)
                {
                    h.UseRedis(redis);
                }

                services.AddSingleton(_ => NpgsqlDataSource.Create(settings.Postgres!));
                services.AddSingleton<Ledger>(sp => new PostgresLedger(sp.GetRequiredService<NpgsqlDataSource>(), settings.Schema));
            }
        });
        // The services' tables exist before Herald's hosted services start running steps.
        services.Insert(0, ServiceDescriptor.Singleton<IHostedService, LedgerSchema>());
    }

    private static void AddTelemetry(WebApplicationBuilder builder, OrderServiceSettings settings)
    {
        var otlp = !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("orders"))
            .WithTracing(t =>
            {
                t.AddSource("Herald", OrdersTelemetry.SourceName).AddAspNetCoreInstrumentation();
                if (otlp)
                {
                    t.AddOtlpExporter();
                }

                if (settings.ConsoleTelemetry)
                {
                    t.AddConsoleExporter();
                }
            })
            .WithMetrics(m =>
            {
                m.AddMeter("Herald").AddAspNetCoreInstrumentation();
                if (otlp)
                {
                    m.AddOtlpExporter();
                }

                if (settings.ConsoleTelemetry)
                {
                    m.AddConsoleExporter();
                }
            });
    }

    /// <summary>Creates the sample services' tables at start.</summary>
    private sealed class LedgerSchema(Ledger ledger) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => ledger.EnsureSchemaAsync(cancellationToken);

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
