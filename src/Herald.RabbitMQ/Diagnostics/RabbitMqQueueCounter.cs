using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Herald.RabbitMQ.Transport;

namespace Herald.RabbitMQ.Diagnostics;

/// <summary>
/// Reads a queue's counts for the gauges: ready and unacked from the management HTTP API
/// (<c>GET /api/queues/{vhost}/{name}</c>), or, when the API is off or unreachable, the ready count alone by a passive
/// declare (AMQP has no unacked count). The first fall back is logged once per transport.
/// </summary>
internal sealed class RabbitMqQueueCounter : IDisposable
{
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(5);

    private readonly RabbitMqTransport _transport;
    private readonly HttpClient? _http;
    private readonly string _vhost;
    private int _fallbackLogged;

    public RabbitMqQueueCounter(RabbitMqTransport transport)
    {
        _transport = transport;
        var options = transport.Options;
        var amqp = options.ConnectionUri;
        _vhost = Uri.EscapeDataString(amqp.AbsolutePath.Length > 1 ? Uri.UnescapeDataString(amqp.AbsolutePath[1..]) : "/");
        if (!options.UseManagementApi)
        {
            return;
        }

        var management = ManagementUri(options);
        var credentials = management.UserInfo.Length > 0 ? management.UserInfo : amqp.UserInfo;
        ManagementEndpoint = new UriBuilder(management) { UserName = string.Empty, Password = string.Empty }.Uri;
        var path = ManagementEndpoint.AbsolutePath.EndsWith('/') ? ManagementEndpoint.AbsolutePath : ManagementEndpoint.AbsolutePath + "/";
        _http = new HttpClient { BaseAddress = new UriBuilder(ManagementEndpoint) { Path = path }.Uri, Timeout = RequestTimeout };
        if (credentials.Length > 0)
        {
            var colon = credentials.IndexOf(':', StringComparison.Ordinal);
            var user = Uri.UnescapeDataString(colon < 0 ? credentials : credentials[..colon]);
            var password = colon < 0 ? string.Empty : Uri.UnescapeDataString(credentials[(colon + 1)..]);
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(user + ":" + password)));
        }
    }

    /// <summary>The management API read, without credentials; null when it is off.</summary>
    public Uri? ManagementEndpoint { get; }

    /// <summary>The management API of <paramref name="options"/>: the one set, else the AMQP host on the management port.</summary>
    internal static Uri ManagementUri(RabbitMqTransportOptions options)
    {
        if (options.ManagementUri is { } set)
        {
            return set;
        }

        var amqp = options.ConnectionUri;
        var secure = amqp.Scheme == "amqps";
        return new UriBuilder(secure ? Uri.UriSchemeHttps : Uri.UriSchemeHttp, amqp.Host, secure ? 15671 : 15672, "/").Uri;
    }

    /// <summary>The queue's counts; null when the API answered without them yet and the queue cannot be declared passively.</summary>
    public async Task<QueueCounts?> CountAsync(string queue, CancellationToken cancellationToken)
    {
        if (_http is not null)
        {
            try
            {
                using var response = await _http.GetAsync($"api/queues/{_vhost}/{Uri.EscapeDataString(queue)}?columns=messages_ready,messages_unacknowledged", cancellationToken).ConfigureAwait(false);
                response.EnsureSuccessStatusCode();
                var json = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
                await using (json.ConfigureAwait(false))
                {
                    using var document = await JsonDocument.ParseAsync(json, cancellationToken: cancellationToken).ConfigureAwait(false);
                    var root = document.RootElement;
                    // A queue declared a moment ago has no statistics until the broker's next stats emission (every ~5 s).
                    if (root.ValueKind == JsonValueKind.Object
                        && root.TryGetProperty("messages_ready", out var ready) && ready.TryGetInt64(out var readyCount)
                        && root.TryGetProperty("messages_unacknowledged", out var unacked) && unacked.TryGetInt64(out var unackedCount))
                    {
                        return new QueueCounts(readyCount, unackedCount);
                    }

                    return null;
                }
            }
            catch (Exception e) when (e is HttpRequestException or JsonException || (e is TaskCanceledException && !cancellationToken.IsCancellationRequested))
            {
                if (Interlocked.Exchange(ref _fallbackLogged, 1) == 0)
                {
                    Log.ManagementApiUnavailable(_transport.Logger, e, ManagementEndpoint!.ToString(), queue);
                }
            }
        }

        return new QueueCounts(await _transport.CountReadyAsync(queue, cancellationToken).ConfigureAwait(false), null);
    }

    public void Dispose() => _http?.Dispose();
}
