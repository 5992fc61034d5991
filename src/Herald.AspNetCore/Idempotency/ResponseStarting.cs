using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Herald.AspNetCore.Idempotency;

/// <summary>
/// The response feature of an endpoint run under an idempotency key: the <c>OnStarting</c> callbacks the endpoint registers
/// are held, and run (last registered first, as the server does) when the response is about to be stored or to stream, so
/// the headers they set are in the stored response as in the one the first client gets. Everything else is the server's.
/// </summary>
internal sealed class ResponseStarting(IHttpResponseFeature inner) : IHttpResponseFeature
{
    private List<(Func<object, Task> Callback, object State)>? _callbacks;
    private bool _fired;

    public int StatusCode
    {
        get => inner.StatusCode;
        set => inner.StatusCode = value;
    }

    public string? ReasonPhrase
    {
        get => inner.ReasonPhrase;
        set => inner.ReasonPhrase = value;
    }

    public IHeaderDictionary Headers
    {
        get => inner.Headers;
        set => inner.Headers = value;
    }

#pragma warning disable CS0618 // The interface's obsolete body stream is the server's, as it would be unwrapped.
    public Stream Body
    {
        get => inner.Body;
        set => inner.Body = value;
    }
#pragma warning restore CS0618

    public bool HasStarted => inner.HasStarted;

    public void OnStarting(Func<object, Task> callback, object state)
    {
        if (_fired)
        {
            // Started already (streaming): the server's feature answers as it would.
            inner.OnStarting(callback, state);
            return;
        }

        (_callbacks ??= []).Add((callback, state));
    }

    public void OnCompleted(Func<object, Task> callback, object state) => inner.OnCompleted(callback, state);

    /// <summary>Runs the held callbacks once, last registered first: the response's headers are final after it.</summary>
    public async ValueTask FireAsync()
    {
        if (Take() is not { } callbacks)
        {
            return;
        }

        for (var i = callbacks.Count - 1; i >= 0; i--)
        {
            await callbacks[i].Callback(callbacks[i].State).ConfigureAwait(false);
        }
    }

    /// <summary>Hands the callbacks not yet run to the server's feature (the endpoint failed): they run for whatever is sent instead, as without the key.</summary>
    public void HandBack()
    {
        foreach (var (callback, state) in Take() ?? [])
        {
            inner.OnStarting(callback, state);
        }
    }

    // Once only: callbacks registered after this go to the server's feature.
    private List<(Func<object, Task> Callback, object State)>? Take()
    {
        if (_fired)
        {
            return null;
        }

        _fired = true;
        var callbacks = _callbacks;
        _callbacks = null;
        return callbacks;
    }
}
