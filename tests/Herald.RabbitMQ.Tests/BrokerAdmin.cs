using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// The test broker: its AMQP address (env HERALD_TEST_RABBITMQ) and its management API (env
/// HERALD_TEST_RABBITMQ_MANAGEMENT), used to kill connections and to delete what a test declared.
/// </summary>
internal static class BrokerAdmin
{
    public static Uri AmqpUri { get; } = new(Environment.GetEnvironmentVariable("HERALD_TEST_RABBITMQ") is { Length: > 0 } amqp ? amqp : "amqp://guest:guest@127.0.0.1:5672/");

    private static readonly Uri ManagementUri = new(Environment.GetEnvironmentVariable("HERALD_TEST_RABBITMQ_MANAGEMENT") is { Length: > 0 } http ? http : "http://guest:guest@127.0.0.1:15672/");

    private static readonly HttpClient Http = CreateHttp();

    private static string VHost => Uri.EscapeDataString(AmqpUri.AbsolutePath.Length > 1 ? Uri.UnescapeDataString(AmqpUri.AbsolutePath[1..]) : "/");

    /// <summary>Closes every connection whose client-provided name starts with the prefix (gone by the time it returns); returns how many were listed.</summary>
    public static async Task<int> KillConnectionsAsync(string clientNamePrefix, int atLeast = 1)
    {
        // The management API lists a new connection a moment after it opened: poll until the expected ones show.
        var names = new List<string>();
        await Herald.Conformance.Eventually.UntilAsync(
            async () =>
            {
                using var doc = JsonDocument.Parse(await Http.GetStringAsync("api/connections?columns=name,client_properties"));
                names = doc.RootElement.EnumerateArray()
                    .Where(c => c.TryGetProperty("client_properties", out var p)
                        && p.ValueKind == JsonValueKind.Object
                        && p.TryGetProperty("connection_name", out var n)
                        && n.GetString()?.StartsWith(clientNamePrefix, StringComparison.Ordinal) == true)
                    .Select(c => c.GetProperty("name").GetString()!)
                    .ToList();
                return names.Count >= atLeast;
            },
            $"the management API lists {atLeast} connection(s) named '{clientNamePrefix}...'");

        foreach (var name in names)
        {
            var path = "api/connections/" + Uri.EscapeDataString(name);
            using var request = new HttpRequestMessage(HttpMethod.Delete, path);
            request.Headers.Add("X-Reason", "Herald test: connection killed on purpose");
            using var response = await Http.SendAsync(request);
            if (response.IsSuccessStatusCode)
            {
                continue;
            }

            // The listing lags (its statistics refresh every few seconds): a connection that closed meanwhile (an earlier kill,
            // a host's stop) answers 404, or 500 while its statistics outlive it. Gone is what was asked: wait until the API
            // says so (a live connection the DELETE failed on never is, and the wait times out).
            var status = response.StatusCode;
            await Herald.Conformance.Eventually.UntilAsync(
                async () =>
                {
                    using var check = await Http.GetAsync(path);
                    return check.StatusCode == System.Net.HttpStatusCode.NotFound;
                },
                $"the connection '{name}' is gone after its DELETE answered {(int)status}");
        }

        return names.Count;
    }

    /// <summary>Deletes every queue and exchange whose name starts with the prefix (twice over, should one reappear meanwhile).</summary>
    public static async Task DeleteAllAsync(string prefix)
    {
        for (var pass = 0; pass < 2; pass++)
        {
            foreach (var kind in new[] { "queues", "exchanges" })
            {
                using var doc = JsonDocument.Parse(await Http.GetStringAsync($"api/{kind}/{VHost}?columns=name"));
                foreach (var name in doc.RootElement.EnumerateArray().Select(e => e.GetProperty("name").GetString()!).Where(n => n.StartsWith(prefix, StringComparison.Ordinal)))
                {
                    await DeleteAsync(kind, name);
                }
            }
        }
    }

    /// <summary>Deletes one exchange behind its declarer's back (with its bindings), as an operator would; a missing one is fine.</summary>
    public static Task DeleteExchangeAsync(string exchange) => DeleteAsync("exchanges", exchange);

    private static async Task DeleteAsync(string kind, string name)
    {
        using var response = await Http.DeleteAsync($"api/{kind}/{VHost}/{Uri.EscapeDataString(name)}");
        if (response.StatusCode != System.Net.HttpStatusCode.NotFound)
        {
            response.EnsureSuccessStatusCode();
        }
    }

    /// <summary>Names of the queues that start with the prefix.</summary>
    public static async Task<IReadOnlyList<string>> QueueNamesAsync(string prefix)
    {
        using var doc = JsonDocument.Parse(await Http.GetStringAsync($"api/queues/{VHost}?columns=name"));
        return doc.RootElement.EnumerateArray().Select(e => e.GetProperty("name").GetString()!).Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).ToList();
    }

    /// <summary>How many consumers a queue has, or null while it does not exist.</summary>
    public static async Task<int?> ConsumerCountAsync(string queue)
    {
        using var doc = JsonDocument.Parse(await Http.GetStringAsync($"api/queues/{VHost}?columns=name,consumers"));
        foreach (var entry in doc.RootElement.EnumerateArray().Where(e => e.GetProperty("name").GetString() == queue))
        {
            return entry.TryGetProperty("consumers", out var consumers) ? consumers.GetInt32() : 0;
        }

        return null;
    }

    /// <summary>The ready and unacknowledged message counts of the queues whose names start with the prefix, as the management API last refreshed them (every 5 s or so).</summary>
    public static async Task<IReadOnlyList<(string Queue, long Ready, long Unacked)>> QueueCountsAsync(string prefix)
    {
        using var doc = JsonDocument.Parse(await Http.GetStringAsync($"api/queues/{VHost}?columns=name,messages_ready,messages_unacknowledged"));
        static long Read(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
        return doc.RootElement.EnumerateArray()
            .Where(e => e.GetProperty("name").GetString()!.StartsWith(prefix, StringComparison.Ordinal))
            .Select(e => (e.GetProperty("name").GetString()!, Read(e, "messages_ready"), Read(e, "messages_unacknowledged")))
            .ToList();
    }

    /// <summary>The declared arguments of a queue, from the management API.</summary>
    public static async Task<JsonElement> QueueArgumentsAsync(string queue)
    {
        var json = await Http.GetFromJsonAsync<JsonElement>($"api/queues/{VHost}/{Uri.EscapeDataString(queue)}?columns=arguments,type");
        return json;
    }

    /// <summary>A plain RabbitMQ.Client connection, as another application would use (as the test user, or as <paramref name="user"/>).</summary>
    public static Task<IConnection> ConnectAsync(string name, string? user = null) =>
        new ConnectionFactory { Uri = user is null ? AmqpUri : new UriBuilder(AmqpUri) { UserName = user, Password = user }.Uri }.CreateConnectionAsync(name);

    /// <summary>Creates a user (its password its name) with every permission on the test virtual host.</summary>
    public static async Task CreateUserAsync(string user)
    {
        using var created = await Http.PutAsJsonAsync($"api/users/{Uri.EscapeDataString(user)}", new { password = user, tags = "" });
        created.EnsureSuccessStatusCode();
        using var permitted = await Http.PutAsJsonAsync($"api/permissions/{VHost}/{Uri.EscapeDataString(user)}", new { configure = ".*", write = ".*", read = ".*" });
        permitted.EnsureSuccessStatusCode();
    }

    public static async Task DeleteUserAsync(string user)
    {
        using var response = await Http.DeleteAsync($"api/users/{Uri.EscapeDataString(user)}");
        if (response.StatusCode != System.Net.HttpStatusCode.NotFound)
        {
            response.EnsureSuccessStatusCode();
        }
    }

    private static HttpClient CreateHttp()
    {
        var userInfo = Uri.UnescapeDataString(ManagementUri.UserInfo);
        var client = new HttpClient { BaseAddress = new Uri(ManagementUri.GetLeftPart(UriPartial.Authority) + "/"), Timeout = TimeSpan.FromSeconds(15) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(userInfo)));
        return client;
    }
}
