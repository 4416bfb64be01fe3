// The AI SDK's chat client (package `ai`) against tokenstream's UI message stream.
//
// Reads a JSON spec on stdin and prints one JSON result on stdout; tests/test_ai_sdk_node.py
// makes the spec and checks the result.
//
// spec.mode "transport": DefaultChatTransport.sendMessages (what useChat sends) with
//   spec.messages, spec.body, spec.trigger, spec.messageId; the chunks it parsed and the
//   UIMessage readUIMessageStream builds (continuing spec.message, if given).
// spec.mode "chat": an AbstractChat (useChat's engine, with the state kept in memory) that
//   sends spec.text, answers every tool call with spec.toolOutput and, once every call has
//   its output, sends the conversation again (lastAssistantMessageIsCompleteWithToolCalls);
//   then regenerates if spec.regenerate.
// spec.mode "resume": an AbstractChat with the id spec.chatId and spec.messages resumes the
//   chat's stream (chat.resumeStream(): what useChat({ resume: true }) does when it mounts).
// spec.replay: a file whose bytes answer the first request instead of the server, with the
//   UI message stream's headers (to check what the encoder makes of given events).
import { readFileSync } from 'node:fs';
import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithToolCalls,
  readUIMessageStream,
} from 'ai';

const spec = JSON.parse(readFileSync(0, 'utf8'));
const responses = []; // what each request got: status and headers
const requestBodies = []; // what each request sent

async function recordingFetch(input, init) {
  if (init?.body != null) requestBodies.push(JSON.parse(init.body));
  let response;
  if (spec.replay != null && responses.length === 0) {
    response = new Response(readFileSync(spec.replay), {
      headers: {
        'content-type': 'text/event-stream',
        'x-vercel-ai-ui-message-stream': 'v1',
      },
    });
  } else {
    response = await fetch(input, init);
  }
  responses.push({
    status: response.status,
    contentType: response.headers.get('content-type'),
    uiMessageStream: response.headers.get('x-vercel-ai-ui-message-stream'),
  });
  return response;
}

function newTransport() {
  return new DefaultChatTransport({
    api: spec.api,
    body: spec.body,
    headers: spec.headers,
    fetch: recordingFetch,
  });
}

async function viaTransport() {
  const stream = await newTransport().sendMessages({
    chatId: spec.chatId ?? 'chat-1',
    messages: spec.messages,
    trigger: spec.trigger ?? 'submit-message',
    messageId: spec.messageId,
    abortSignal: undefined,
  });
  const [forChunks, forMessage] = stream.tee();
  const chunks = [];
  const collecting = (async () => {
    for await (const chunk of forChunks) chunks.push(chunk);
  })();
  let message = null;
  const streamErrors = [];
  for await (const snapshot of readUIMessageStream({
    stream: forMessage,
    message: spec.message,
    onError: error => streamErrors.push(String(error?.message ?? error)),
  })) {
    message = snapshot;
  }
  await collecting;
  return { chunks, message, streamErrors };
}

class MemoryChatState {
  constructor(messages = []) {
    this.status = 'ready';
    this.error = undefined;
    this.messages = messages;
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = this.messages.map((m, i) => (i === index ? message : m));
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class MemoryChat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new MemoryChatState(init.messages) });
  }
}

async function viaChat() {
  const finishes = [];
  const errors = [];
  const toolCalls = [];
  const chat = new MemoryChat({
    id: 'chat-1',
    transport: newTransport(),
    onError: error => errors.push(error.message),
    onFinish: ({ message, finishReason, isError }) =>
      finishes.push({ messageId: message.id, finishReason, isError, metadata: message.metadata }),
    onToolCall: ({ toolCall }) => {
      toolCalls.push(toolCall);
      // without await, as the SDK's documentation says: the chat waits for the output
      chat.addToolOutput({
        tool: toolCall.toolName,
        toolCallId: toolCall.toolCallId,
        output: spec.toolOutput,
      });
    },
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
  });
  await chat.sendMessage({ text: spec.text });
  await waitUntilReady(chat);
  const beforeRegenerate = structuredClone(chat.messages);
  if (spec.regenerate) {
    await chat.regenerate();
    await waitUntilReady(chat);
  }
  return {
    messages: chat.messages,
    beforeRegenerate,
    status: chat.status,
    error: chat.error?.message ?? null,
    errors,
    finishes,
    toolCalls,
  };
}

async function viaResume() {
  const errors = [];
  const finishes = [];
  const chat = new MemoryChat({
    id: spec.chatId,
    messages: spec.messages,
    transport: newTransport(),
    onError: error => errors.push(error.message),
    onFinish: ({ message, finishReason, isError }) =>
      finishes.push({ messageId: message.id, finishReason, isError }),
  });
  await chat.resumeStream();
  await waitUntilReady(chat);
  return { messages: chat.messages, status: chat.status, error: chat.error?.message ?? null,
           errors, finishes };
}

async function waitUntilReady(chat) {
  // an automatic send after a tool output runs after sendMessage has returned
  for (let i = 0; i < 500 && chat.status !== 'ready' && chat.status !== 'error'; i++) {
    await new Promise(resolve => setTimeout(resolve, 10));
  }
}

let result;
try {
  const modes = { chat: viaChat, resume: viaResume, transport: viaTransport };
  const run = modes[spec.mode ?? 'transport'];
  if (run == null) throw new Error(`unknown spec.mode ${spec.mode}`);
  result = await run();
} catch (error) {
  result = {
    thrown: { name: error.name, message: error.message, statusCode: error.statusCode ?? null },
  };
}
process.stdout.write(JSON.stringify({ ...result, responses, requestBodies }));
