// The AI SDK's streamText with its OpenAI-compatible and Anthropic providers, pointed at
// tokenstream's /v1/chat/completions and /v1/messages.
//
// Reads a JSON spec on stdin ({baseUrl, provider: "openai-compatible" | "anthropic",
// prompt, system?, body?, tools?: [names]}) and prints one JSON result on stdout: the text
// deltas, the text, the reasoning, the tool calls, the finish reason, the usage and any
// error the stream reported. The tools are offered with an open object schema and no
// execute: their calls are the result.
// tests/test_ai_sdk_node.py makes the spec and checks the result.
import { readFileSync } from 'node:fs';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { jsonSchema, streamText, tool } from 'ai';

const spec = JSON.parse(readFileSync(0, 'utf8'));

// tokenstream's own request fields (pacing, source) added to the body the provider sends
async function withTokenstreamFields(input, init) {
  const body = { ...JSON.parse(init.body), tokenstream: spec.body };
  return fetch(input, { ...init, body: JSON.stringify(body) });
}

function model() {
  const settings = {
    baseURL: `${spec.baseUrl}/v1`,
    apiKey: 'anything',
    fetch: spec.body == null ? undefined : withTokenstreamFields,
  };
  if (spec.provider === 'anthropic') {
    return createAnthropic(settings)('tokenstream-1');
  }
  return createOpenAICompatible({ ...settings, name: 'tokenstream', includeUsage: true })
    .chatModel('tokenstream-1');
}

const tools = Object.fromEntries(
  (spec.tools ?? []).map(name => [name, tool({ inputSchema: jsonSchema({ type: 'object' }) })]),
);

const errors = [];
const result = streamText({
  model: model(),
  tools,
  system: spec.system,
  prompt: spec.prompt,
  maxRetries: 0,
  maxOutputTokens: 4096, // the Anthropic provider asks it of a model it does not know
  onError: ({ error }) => errors.push(String(error?.message ?? error)),
});

const deltas = [];
for await (const delta of result.textStream) deltas.push(delta);
const usage = await result.usage;
process.stdout.write(
  JSON.stringify({
    deltas,
    text: await result.text,
    reasoning: (await result.reasoningText) ?? '',
    toolCalls: (await result.toolCalls).map(({ toolCallId, toolName, input }) =>
      ({ toolCallId, toolName, input })),
    finishReason: await result.finishReason,
    usage: {
      inputTokens: usage.inputTokens ?? null,
      outputTokens: usage.outputTokens ?? null,
      totalTokens: usage.totalTokens ?? null,
    },
    errors,
  }),
);
