// trellis::MessageObserver: what a layer registers to see each message of a streaming call.
#pragma once

#include <google/protobuf/message_lite.h>

#include <memory>

#include "trellis/status.hpp"

namespace trellis {

namespace detail {
class MessageObservers;
}

// Sees the individual messages of a streaming call as they pass through a middleware stack. A
// layer registers one with Call::observe_messages() before it calls its inner service, and keeps
// it in its coroutine frame or its hook State: destroying the observer unregisters it, so a
// layer that runs once per attempt (inside a RetryLayer) registers a fresh one each time. An
// observer belongs to one call at a time; registering it again moves it to the end of the order.
//
// Which messages: every message the call's stream carries while the observer is registered. On the
// server, each request the handler reads (on_received) and each response it writes (on_sent); on
// the client, each request the caller writes (on_sent) and each response it reads (on_received).
// Not streamed past observers: the one request of a server-streaming call (Call::request(), on
// both sides) and, on the server, the one response of a client-streaming call (Call::response(),
// written after the stack has returned).
//
// Order: a message meets the observers in the order the layers meet it on its way, as a call
// does: on the server, a request reaches the outermost layer's observer first and a response
// the innermost one's first; on the client, the other way round.
//
// Errors: a non-OK status fails the call with that status, which becomes the call's final
// status (on the server, what the client gets; on the client, what finish() gives). A rejected
// received message is not handed to the reader (the read ends as at the end of the stream); a
// rejected sent message is not sent (the write completes with false). Observers after the one
// that rejects it do not see the message.
//
// Threading: calls come from the stream's worker thread, except on_sent on the server, which
// runs where the handler calls write(), when it calls it (the call's worker, unless the handler
// writes from a task of its own; with a deferred token, before the operation is awaited). On a bidi
// call reads and writes may run at the same time, so an observer that keeps state for both
// directions must synchronise it. An observer must not block, and should be cheap: it runs once per
// message.
//
// Cost: a stream without observers checks one pointer per message. On the client, on_sent gets
// the request parsed again from what the caller's write() serialized (the write has returned to
// the caller by the time the call, and with it the layers' observers, is set up), so a client
// observer of sent messages costs one parse per message.
class MessageObserver {
 public:
  // A message the stream received, parsed, before the reader gets it.
  virtual Status on_received(const google::protobuf::MessageLite& message) {
    (void)message;
    return Status();
  }
  // A message about to be sent.
  virtual Status on_sent(const google::protobuf::MessageLite& message) {
    (void)message;
    return Status();
  }

 protected:
  MessageObserver() = default;
  // A copy is not registered anywhere.
  MessageObserver(const MessageObserver&) {}
  MessageObserver& operator=(const MessageObserver&) { return *this; }
  ~MessageObserver();

 private:
  friend class detail::MessageObservers;
  detail::MessageObservers* list_ = nullptr;  // where it is registered, if anywhere
  MessageObserver* outer_ = nullptr;          // the observer registered before this one
  MessageObserver* inner_ = nullptr;          // the observer registered after this one
};

namespace detail {

// The observers of one stream, in the order they were registered (outermost layer first): an
// intrusive list, changed on the stream's worker only.
class MessageObservers {
 public:
  MessageObservers() = default;
  MessageObservers(const MessageObservers&) = delete;
  MessageObservers& operator=(const MessageObservers&) = delete;
  ~MessageObservers() { clear(); }

  bool empty() const { return outermost_ == nullptr; }
  // `server`: the stream is a server's (it decides which way messages travel through layers).
  void add(MessageObserver* observer, bool server) {
    if (observer->list_ != nullptr) observer->list_->remove(observer);
    server_ = server;
    observer->list_ = this;
    observer->outer_ = innermost_;
    observer->inner_ = nullptr;
    (innermost_ != nullptr ? innermost_->inner_ : outermost_) = observer;
    innermost_ = observer;
  }
  void remove(MessageObserver* observer) {
    (observer->outer_ != nullptr ? observer->outer_->inner_ : outermost_) = observer->inner_;
    (observer->inner_ != nullptr ? observer->inner_->outer_ : innermost_) = observer->outer_;
    observer->list_ = nullptr;
    observer->outer_ = observer->inner_ = nullptr;
  }
  void clear() {
    while (outermost_ != nullptr) remove(outermost_);
  }

  Status received(const google::protobuf::MessageLite& message) const {
    return server_ ? notify<&MessageObserver::on_received, &MessageObserver::inner_>(outermost_,
                                                                                     message)
                   : notify<&MessageObserver::on_received, &MessageObserver::outer_>(innermost_,
                                                                                     message);
  }
  Status sent(const google::protobuf::MessageLite& message) const {
    return server_
               ? notify<&MessageObserver::on_sent, &MessageObserver::outer_>(innermost_, message)
               : notify<&MessageObserver::on_sent, &MessageObserver::inner_>(outermost_, message);
  }

 private:
  template <Status (MessageObserver::*On)(const google::protobuf::MessageLite&),
            MessageObserver* MessageObserver::*Next>
  static Status notify(MessageObserver* first, const google::protobuf::MessageLite& message) {
    for (MessageObserver* o = first; o != nullptr; o = o->*Next) {
      if (Status s = (o->*On)(message); !s.ok()) return s;
    }
    return Status();
  }

  MessageObserver* outermost_ = nullptr;
  MessageObserver* innermost_ = nullptr;
  bool server_ = false;
};

// What a Call knows of its stream: the layers' observers of its messages (Call::observe_messages).
// The call machinery's streams derive from it (detail::StreamCore).
class ObservedStream {
 public:
  // Whether any observer is registered; the observers, or nullptr while none ever was.
  bool observed() const { return observers_ != nullptr && !observers_->empty(); }
  const MessageObservers* observers() const { return observers_.get(); }
  // Registers `observer`. On the stream's worker while the middleware stack runs, before the
  // messages it is to see.
  void observe(MessageObserver& observer, bool server) {
    // Made on first use: most streams are never observed, and a held stream is smaller without.
    if (observers_ == nullptr) observers_ = std::make_unique<MessageObservers>();
    observers_->add(&observer, server);
  }

 protected:
  ObservedStream() = default;
  ~ObservedStream() = default;
  std::unique_ptr<MessageObservers> observers_;
};

}  // namespace detail

inline MessageObserver::~MessageObserver() {
  if (list_ != nullptr) list_->remove(this);
}

}  // namespace trellis
