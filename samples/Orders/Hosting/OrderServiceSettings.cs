using Microsoft.Extensions.Configuration;

namespace Orders;

/// <summary>
/// The service's settings, from configuration (appsettings, environment variables such as <c>HERALD__PROFILE</c>, or
/// arguments such as <c>--Herald:Profile distributed</c>). There are no default credentials: the distributed profile
/// refuses to start without its connection strings.
/// </summary>
public sealed record OrderServiceSettings
{
    public const string Embedded = "embedded";
    public const string Distributed = "distributed";

    /// <summary><c>embedded</c> (SQLite for everything, one file) or <c>distributed</c> (PostgreSQL and RabbitMQ).</summary>
    public string Profile { get; init; } = Embedded;

    /// <summary>The SQLite file of the embedded profile (<c>Herald:Sqlite</c>).</summary>
    public string SqlitePath { get; init; } = "orders.db";

    /// <summary>The PostgreSQL connection string of the distributed profile (<c>Herald:Postgres</c>).</summary>
    public string? Postgres { get; init; }

    /// <summary>The PostgreSQL schema of every table (<c>Herald:Schema</c>).</summary>
    public string Schema { get; init; } = "orders";

    /// <summary>The RabbitMQ URI with its user and password (<c>Herald:RabbitMq</c>).</summary>
    public Uri? RabbitMq { get; init; }

    /// <summary>Optional Redis configuration for idempotency keys and inbox marks (<c>Herald:Redis</c>).</summary>
    public string? Redis { get; init; }

    /// <summary>The endpoint (queue) name (<c>Herald:Endpoint</c>); instances that share the work share it.</summary>
    public string Endpoint { get; init; } = "orders";

    /// <summary>Whether traces and metrics also go to the console (<c>Herald:ConsoleTelemetry</c>); off so the output stays readable.</summary>
    public bool ConsoleTelemetry { get; init; }

    public static OrderServiceSettings From(IConfiguration configuration)
    {
        var section = configuration.GetSection("Herald");
        var profile = (section["Profile"] ?? Embedded).Trim().ToLowerInvariant();
        var settings = new OrderServiceSettings
        {
            Profile = profile,
            SqlitePath = section["Sqlite"] ?? "orders.db",
            Postgres = section["Postgres"],
            Schema = section["Schema"] ?? "orders",
            RabbitMq = section["RabbitMq"] is { Length: > 0 } uri ? new Uri(uri) : null,
            Redis = section["Redis"] is { Length: > 0 } redis ? redis : null,
            Endpoint = section["Endpoint"] ?? "orders",
            ConsoleTelemetry = bool.TryParse(section["ConsoleTelemetry"], out var console) && console,
        };
        settings.Check();
        return settings;
    }

    private void Check()
    {
        switch (Profile)
        {
            case Embedded:
                break;
            case Distributed:
                var missing = new List<string>();
                if (string.IsNullOrWhiteSpace(Postgres))
                {
                    missing.Add("Herald:Postgres (HERALD__POSTGRES), a PostgreSQL connection string with its user and password");
                }

                if (RabbitMq is null)
                {
                    missing.Add("Herald:RabbitMq (HERALD__RABBITMQ), the broker URI with its user and password, amqp://user:password@host:5672/");
                }

                if (missing.Count > 0)
                {
                    throw new InvalidOperationException("The distributed profile needs " + string.Join(" and ", missing) + ".");
                }

                break;
            default:
                throw new InvalidOperationException($"Unknown profile '{Profile}' (Herald:Profile): use '{Embedded}' or '{Distributed}'.");
        }
    }
}
