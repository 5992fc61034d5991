using System.Reflection;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Handling;

/// <summary>
/// Builds a scoped or transient handler without a DI scope when a scope could give it nothing the root does not: its
/// service is registered as the handler type itself, it has one public constructor, and every constructor parameter is a
/// singleton (a singleton is the same instance from the root and from any scope). Such a handler is a new instance per
/// message, as registered, and a message that needs a scope (the unit of work, a scoped service through
/// <see cref="MessageContext.Services"/>) still gets one on demand. Anything else (a scoped or transient dependency,
/// <see cref="IServiceProvider"/>, a keyed or optional parameter, a disposable handler, a factory registration) keeps the
/// per-message scope. It saves the scope's allocations and its resolution, which dominate a light handler's cost.
/// </summary>
internal static class RootActivation
{
    /// <summary>The factory that builds <paramref name="handlerType"/> from the root, or null when it needs a scope.</summary>
    public static ObjectFactory? TryCreate(Type handlerType, IServiceCollection? services)
    {
        if (services is null
            || handlerType.IsAbstract
            || typeof(IDisposable).IsAssignableFrom(handlerType)
            || typeof(IAsyncDisposable).IsAssignableFrom(handlerType)
            || Last(services, handlerType) is not { IsKeyedService: false, Lifetime: not ServiceLifetime.Singleton } own
            || own.ImplementationType != handlerType)
        {
            return null;
        }

        var constructors = handlerType.GetConstructors(BindingFlags.Public | BindingFlags.Instance);
        if (constructors.Length != 1 || !Array.TrueForAll(constructors[0].GetParameters(), p => IsRootSingleton(p, services)))
        {
            return null;
        }

        return ActivatorUtilities.CreateFactory(handlerType, Type.EmptyTypes);
    }

    private static bool IsRootSingleton(ParameterInfo parameter, IServiceCollection services)
    {
        var type = parameter.ParameterType;
        if (parameter.IsOptional || parameter.GetCustomAttributesData().Count > 0 || type.IsByRef
            || (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IEnumerable<>)))
        {
            return false;
        }

        // As the container resolves it: the last registration of the closed type, else of its open generic definition.
        var descriptor = Last(services, type) ?? (type.IsConstructedGenericType ? Last(services, type.GetGenericTypeDefinition()) : null);
        return descriptor is { IsKeyedService: false, Lifetime: ServiceLifetime.Singleton };
    }

    private static ServiceDescriptor? Last(IServiceCollection services, Type serviceType)
    {
        for (var i = services.Count - 1; i >= 0; i--)
        {
            var descriptor = services[i];
            if (descriptor.ServiceType == serviceType && !descriptor.IsKeyedService)
            {
                return descriptor;
            }
        }

        return null;
    }
}
