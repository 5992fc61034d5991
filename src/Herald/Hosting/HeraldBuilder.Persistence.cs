using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Herald.Hosting;

public sealed partial class HeraldBuilder
{
    private string? _persistencePackage;

    /// <summary>The persistence package that registered the unit of work (null: the in-memory default).</summary>
    internal string? PersistencePackage => _persistencePackage;

    /// <summary>
    /// For persistence packages (<c>UseSqlite</c>, <c>UsePostgres</c>): registers the scoped <see cref="IUnitOfWork"/> that every
    /// store write of the scope enlists in. Exactly one package provides it; a second, different one throws, since writes to
    /// two databases could not commit together.
    /// </summary>
    public HeraldBuilder UsePersistence(string package, Func<IServiceProvider, IUnitOfWork> unitOfWorkFactory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(package);
        ArgumentNullException.ThrowIfNull(unitOfWorkFactory);
        if (_persistencePackage is not null && !string.Equals(_persistencePackage, package, StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"Herald's unit of work is already provided by {_persistencePackage}; {package} cannot provide a second one. " +
                "Use one persistence package per application: one database holds the event store, outbox, inbox and dead letters.");
        }

        _persistencePackage = package;
        Services.Replace(ServiceDescriptor.Scoped(UnitOfWorkRunner.Adopting(unitOfWorkFactory)));
        return this;
    }
}
