namespace Herald.AspNetCore.Health;

/// <summary>The names and tag of Herald's health checks.</summary>
internal static class HealthCheckNames
{
    public const string Tag = "herald";
    public const string EventStore = "herald-event-store";
    public const string Transport = "herald-transport";
    public const string Projections = "herald-projections";
    public const string DeadLetters = "herald-dead-letters";
    public const string Servers = "herald-servers";
}
