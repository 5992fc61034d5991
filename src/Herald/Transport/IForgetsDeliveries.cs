namespace Herald.Transport;

/// <summary>
/// Marks the target of a <see cref="DeliveryHandler"/> that holds no reference to a <see cref="Delivery"/> once its call
/// returned, so a transport may reuse the delivery object for its next message (the pipeline of an endpoint is one).
/// </summary>
internal interface IForgetsDeliveries;
