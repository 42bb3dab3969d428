#include "api/explain_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/runtime.h"
#include "models/class_head.h"

namespace ssmx {

namespace {

std::string token_label(const Tokenizer* tok, int32_t id) {
  std::string out = "'";
  out += printable_token_text(tok ? tok->token_text(id) : std::string());
  out += "' (id ";
  out += std::to_string(id);
  out += ")";
  return out;
}

std::vector<float> softmax(const std::vector<float>& l) {
  std::vector<float> p(l.size());
  if (l.empty()) return p;
  const float m = *std::max_element(l.begin(), l.end());
  double s = 0;
  for (float v : l) s += std::exp(double(v) - m);
  for (size_t i = 0; i < l.size(); ++i) p[i] = float(std::exp(double(l[i]) - m) / s);
  return p;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

}  // namespace

std::vector<Method> parse_method_list(const std::string& s) {
  std::vector<Method> out;
  for (const std::string& name : split_commas(s)) {
    if (name == "all") {
      for (Method m : all_methods()) out.push_back(m);
    } else {
      out.push_back(parse_method(name));
    }
  }
  return out;
}

LrpRules parse_lrp_rules(const std::string& rules, const std::string& linear_rule, double epsilon, double gamma) {
  LrpRules r;
  if (rules != "none" && !rules.empty()) {
    for (const std::string& name : split_commas(rules)) {
      if (name == "silu") r.silu = true;
      else if (name == "ssm") r.ssm = true;
      else if (name == "gate") r.gate = true;
      else if (name == "norm") r.norm = true;
      else throw Error("--lrp-rules", "unknown rule '" + name + "' (a comma-separated subset of silu,ssm,gate,norm, or none)");
    }
  }
  if (linear_rule == "lrp0") r.linear = LrpRules::Linear::Zero;
  else if (linear_rule == "epsilon") r.linear = LrpRules::Linear::Epsilon;
  else if (linear_rule == "gamma") r.linear = LrpRules::Linear::Gamma;
  else throw Error("--linear-rule", "unknown rule '" + linear_rule + "' (lrp0, epsilon or gamma)");
  r.epsilon = epsilon;
  r.gamma = gamma;
  return r;
}

int32_t parse_token_arg(const Tokenizer* tok, const std::string& s, const std::string& what) {
  if (!s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string::npos) {
    const long long v = std::stoll(s);
    if (v > 2147483647LL) throw Error(what, "token id " + s + " is too large");
    return int32_t(v);
  }
  if (!tok) throw Error(what, "'" + s + "' is not a token id, and the model has no tokenizer.json to read it as text");
  if (auto id = tok->token_to_id(s)) return *id;
  const std::vector<int32_t> ids = tok->encode_ids(s);
  if (ids.size() == 1) return ids[0];
  std::string parts;
  for (int32_t id : ids) {
    if (!parts.empty()) parts += ' ';
    parts += '\'';
    parts += printable_token_text(tok->token_text(id));
    parts += '\'';
  }
  throw Error(what, "'" + s + "' is " + std::to_string(ids.size()) + " tokens (" + parts +
                        "), not one; give a single token or its id");
}

std::string printable_token_text(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out += char(c);
  }
  return out;
}

Report explain_report(const CausalLM& model, const Checkpoint& ck, const Tokenizer* tok, const std::string& model_label,
                      const std::string& text, const std::vector<int32_t>& ids, const ExplainSpec& spec) {
  if (spec.methods.empty()) throw Error("--method", "no method given");
  if (ids.empty()) throw Error("input", "no tokens to explain");
  std::optional<ClassHead> head = load_class_head(ck, model.d_model(), model.vocab_size());
  ExplainOptions eo = spec.options;
  eo.keep_maps = spec.keep_maps;
  eo.target = Target{};
  Target& t = eo.target;
  t.position = spec.position;
  if (!spec.cls.empty()) {
    if (!head) throw Error("--class", "the model has no classification head (docs/methods.md lists the tensor names read)");
    if (!spec.target.empty() || !spec.contrast.empty()) throw Error("--class", "give either --class or --target/--contrast");
    t.kind = Target::Kind::Class;
    t.cls = spec.cls == "predicted" ? -1 : head->parse_class(spec.cls);
  } else {
    if (!spec.target.empty()) t.token = parse_token_arg(tok, spec.target, "--target");
    if (!spec.contrast.empty()) {
      t.kind = Target::Kind::Contrast;
      t.contrast = parse_token_arg(tok, spec.contrast, "--contrast");
    }
  }

  Report rep;
  rep.model = model_label;
  rep.input_text = text;
  rep.words = spec.words;
  Encoding enc;
  if (!text.empty() && tok) enc = tok->encode(text);
  for (size_t k = 0; k < ids.size(); ++k) {
    ReportToken rt;
    rt.id = ids[k];
    rt.text = tok ? tok->token_text(ids[k]) : std::to_string(ids[k]);
    if (k < enc.offsets.size() && enc.ids.size() == ids.size()) rt.begin = enc.offsets[k].first, rt.end = enc.offsets[k].second;
    rep.tokens.push_back(rt);
  }
  for (Method me : spec.methods) {
    eo.method = me;
    log_verbose(std::string("explaining with ") + method_name(me));
    rep.explanations.push_back(explain(model, head ? &*head : nullptr, ids, eo));
    log_verbose(std::string(method_name(me)) + " took " + std::to_string(rep.explanations.back().seconds) + " s");
  }
  const Explanation& e0 = rep.explanations[0];
  const std::vector<float> p = softmax(e0.output_logits);
  const size_t best = size_t(std::max_element(p.begin(), p.end()) - p.begin());
  rep.prediction_prob = p[best];
  if (e0.target.kind == Target::Kind::Class) {
    rep.prediction_label = "class " + std::to_string(best) + " (" + head->labels[best] + ")";
    rep.target_label = "class " + std::to_string(e0.target.cls) + " (" + head->labels[size_t(e0.target.cls)] + ")";
    rep.target_prob = p[size_t(e0.target.cls)];
  } else {
    rep.prediction_label = token_label(tok, int32_t(best));
    rep.target_label = token_label(tok, e0.target.token);
    rep.target_prob = p[size_t(e0.target.token)];
    if (e0.target.kind == Target::Kind::Contrast) rep.contrast_label = token_label(tok, e0.target.contrast);
  }
  return rep;
}

}  // namespace ssmx
